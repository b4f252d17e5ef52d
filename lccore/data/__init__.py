"""Readers for data files, with errors that name the file and line, and the text helpers tasks
tokenise through.

Tasks build on these so that every task reports a missing file, an empty file, bytes that are not
UTF-8 or a malformed row the same way, and so that a long document costs the memory of the tokens
a task keeps (:func:`clip_text`, :func:`tokenize_in_pieces`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Iterator

from ..errors import DataError


#: How a file read as it comes (standard input, a pipe, a device) is named in errors.
STDIN = "<stdin>"
#: Compressed data files are read as they are decompressed; the suffix before names the format.
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def data_suffix(path: str | Path) -> str:
    """The suffix that names a data file's format, lower-cased: ``.jsonl`` for ``train.jsonl.gz``."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def open_data(path: Path):
    """``(reader, compressed)``: a data file opened for reading bytes, decompressed as it is read
    when its name ends in .gz, .bz2 or .xz; ``compressed``: the file underneath (its position is
    how far the file is read), or None."""
    import bz2
    import gzip
    import lzma

    kind = COMPRESSED.get(path.suffix.lower())
    if kind is None:
        return path.open("rb"), None
    compressed = path.open("rb")
    if kind == "gzip":
        return gzip.GzipFile(fileobj=compressed), compressed
    return (bz2.BZ2File(compressed) if kind == "bz2" else lzma.LZMAFile(compressed)), compressed


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is read as it comes, once: ``-`` (standard input), a pipe (``<(command)``,
    a FIFO) or a device (``/dev/stdin``)."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def check_file(path: str | Path, *, once: bool = False) -> Path:
    """``path`` if it is a file with something in it, else a one-line :class:`DataError`.
    ``once=True``: the caller reads it once, so a pipe or a device (:func:`is_stream`) is fine too."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a file")
    if not path.is_file():
        if once and is_stream(path):
            return path
        raise DataError(f"{path}: a pipe or a device, not a file; this data is read more than once, so write it to a file first")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


#: Bytes every :func:`read_lines` has read in this process: what a progress bar over a split
#: whose examples are not counted yet measures (see :func:`bytes_read`).
_BYTES_READ = [0]


def bytes_read() -> int:
    """Bytes read so far by this process through :func:`read_lines` (the readers tasks use)."""
    return _BYTES_READ[0]


#: The longest line a data file may have: a row is read whole, and a file without line ends would
#: be read whole into memory.
MAX_LINE_BYTES = 1 << 28


def read_lines(path: str | Path, *, once: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, decoding strictly as UTF-8 (a leading BOM is dropped).
    ``once=True``: ``-`` is standard input, and a pipe or a device is read as it comes."""
    if once and str(path) == "-":  # its bytes, decoded here whatever the locale (a program's text stream: as it is)
        where, handle, compressed = STDIN, getattr(sys.stdin, "buffer", sys.stdin), None
        closing = contextlib.nullcontext()
    else:
        where = path = check_file(path, once=once)
        handle, compressed = open_data(path)
        closing = contextlib.ExitStack()
        closing.callback(handle.close)
        if compressed is not None:
            closing.callback(compressed.close)
    with closing:
        position = 0
        for number, raw in enumerate(_raw_lines(handle, where, compressed is not None), start=1):
            if len(raw) > MAX_LINE_BYTES:  # a file with no line ends (a dump, a minified blob) is not read whole
                raise DataError(f"{where}:{number}: a line longer than {MAX_LINE_BYTES >> 20} MiB; split the data into lines (a row, a document or a paragraph each)")
            if compressed is None:
                _BYTES_READ[0] += len(raw)
            else:  # what a progress bar over the files' sizes measures: the compressed bytes
                now = compressed.tell()
                _BYTES_READ[0] += now - position
                position = now
            try:
                line = raw if isinstance(raw, str) else raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line


def read_bytes(path: str | Path) -> bytes:
    """A whole data file's bytes (a document such as SQuAD's JSON), decompressed if its name says
    so; a file that cannot be decompressed is a one-line DataError."""
    path = check_file(path)
    handle, compressed = open_data(path)
    with handle, compressed or contextlib.nullcontext():
        try:
            return handle.read()
        except Exception as exc:  # noqa: BLE001 - as in _raw_lines
            if compressed is None:
                raise
            raise DataError(f"{path}: cannot decompress it ({type(exc).__name__}: {exc})") from None


def _raw_lines(handle, where, compressed: bool) -> Iterator:
    """The lines of ``handle``, each read up to one byte past :data:`MAX_LINE_BYTES`; a compressed
    file that cannot be decompressed (damaged, cut short) is a one-line DataError."""
    empty = "" if isinstance(handle, io.TextIOBase) else b""
    number = 0
    while True:
        number += 1
        try:
            raw = handle.readline(MAX_LINE_BYTES + 1)
        except Exception as exc:  # gzip.BadGzipFile, EOFError for a cut stream, lzma.LZMAError, ...
            if not compressed:
                raise
            raise DataError(f"{where}:{number}: cannot decompress it ({type(exc).__name__}: {exc})") from None
        if raw == empty:
            return
        yield raw


#: clip_text keeps, for ``max_length`` tokens, this many words per token (every word not erased by
#: the tokenizer's normaliser gives at least one token; twice as many leaves room for those that are),
CLIP_WORDS_PER_TOKEN = 2
#: at most this many characters of words per token (a longer word is one unknown token in
#: WordPiece, or many tokens in byte-level BPE: either way past the tokens kept),
CLIP_CHARS_PER_TOKEN = 256
#: and at most this many characters per token in all, whitespace included: the bound on the memory.
CLIP_SPAN_PER_TOKEN = 4096
_WORD = re.compile(r"\S+")


def clip_text(text: str, max_length: int, *, keep: str = "start") -> str:
    """``text`` cut to the part its first ``max_length`` tokens come from (``keep="end"``: its
    last), at a word boundary, with words to spare: tokenising it gives the same tokens there.
    Tokenizers encode a whole text before truncating it, at about 140 bytes of memory a character:
    a 10 MB document read for 512 tokens cost 1.4 GB. At most ``max_length *``
    :data:`CLIP_SPAN_PER_TOKEN` characters are kept (a run of whitespace longer than that ends
    the text). Texts too short to cut are returned as they are."""
    if len(text) <= max_length * CLIP_WORDS_PER_TOKEN + 8:  # fewer characters than the words kept
        return text
    # Kept from the end: the same walk over the text reversed (a word reversed is still a word).
    span = text[: max_length * CLIP_SPAN_PER_TOKEN] if keep == "start" else text[-max_length * CLIP_SPAN_PER_TOKEN:][::-1]
    room, words, cut = max_length * CLIP_CHARS_PER_TOKEN, max_length * CLIP_WORDS_PER_TOKEN + 8, len(span)
    for count, word in enumerate(_WORD.finditer(span), start=1):
        if word.end() - word.start() >= room:  # cut inside this word
            cut = word.start() + room
            break
        room -= word.end() - word.start()
        if count == words:
            cut = word.end()
            break
    return span[:cut] if keep == "start" else span[:cut][::-1]


#: Most characters one tokenizer call reads in :func:`tokenize_in_pieces`.
PIECE_CHARS = 1 << 20
_LAST_SPACE = re.compile(r"\s+\S*$")


def tokenize_in_pieces(tokenizer, texts: list[str], *, piece_chars: int = PIECE_CHARS) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=False)["input_ids"]``, with no call reading more than
    ``piece_chars`` characters: the texts are tokenised in groups, and a text longer than a
    sixteenth of that in pieces (so that a call still has texts to spread over the tokenizer's
    threads) cut before a run of whitespace, where no token of BERT's, GPT-2's or SentencePiece's
    pre-tokenizers crosses (the same ids). A tokenizer takes about 140 bytes of memory a character
    while it encodes: one call on 1,000 documents of 100 KB took 14 GB."""
    ids: list[list[int]] = [[] for _ in texts]
    group: list[tuple[int, str]] = []
    size, longest = 0, max(piece_chars // 16, 2)

    def flush() -> None:
        for (owner, _), piece_ids in zip(group, tokenizer([piece for _, piece in group], add_special_tokens=False)["input_ids"]):
            ids[owner].extend(piece_ids)
        group.clear()

    for owner, text in enumerate(texts):
        start = 0
        while start < len(text):
            end = len(text) if len(text) - start <= longest else start + longest
            if end < len(text):  # cut where the last run of whitespace in the second half of the piece begins
                space = _LAST_SPACE.search(text, start + longest // 2, end)
                end = space.start() if space else end
            if size + end - start > piece_chars and group:
                flush()
                size = 0
            group.append((owner, text[start:end]))
            size += end - start
            start = end
    if group:
        flush()
    return ids


#: Deepest nesting of lists and objects a data row may have: rows are records, not trees, and
#: deeper values would exhaust the recursion of the code that walks them.
MAX_JSON_DEPTH = 64


def parse_json_line(line: str, where: str):
    """One JSON value from one line of a data file, or a one-line :class:`DataError` naming
    ``where``: malformed JSON, nesting deeper than :data:`MAX_JSON_DEPTH`, or a lone surrogate
    escape (``"\\ud800"``, which is not a character and breaks every encoder downstream)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_value(value, line, where)
    return value


def check_json_value(value, text: str, where: str) -> None:
    """Refuse a parsed JSON ``value`` (from ``text``) nested deeper than :data:`MAX_JSON_DEPTH`
    or holding a lone surrogate; the checks run only when ``text`` could hold either."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise DataError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u" in text and ("\\ud" in text or "\\uD" in text):  # only then can a surrogate be there
        check_unicode(value, where)


def check_unicode(value, where: str) -> None:
    """Refuse a lone surrogate in any string of ``value`` (a string, or lists and dicts of them):
    no character, though Python and JSON let it through, and every tokenizer and encoder
    downstream fails on it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(f"{where}: a lone surrogate (\\u{ord(item[exc.start]):04x}) is not a character; expected valid Unicode text") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_jsonl(path: str | Path, *, once: bool = False) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSON Lines file (``once``: as
    :func:`read_lines`)."""
    where = STDIN if once and str(path) == "-" else path
    found = False
    for number, line in read_lines(path, once=once):
        if not line.strip():
            continue
        value = parse_json_line(line, f"{where}:{number}")
        found = True
        yield number, value
    if not found and not (once and is_stream(path)):  # an empty stream is an empty input (a filter upstream let nothing through)
        raise DataError(f"{where}: file has no rows")


def read_csv(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) for each row of a CSV file with a header line."""
    text = "".join(line for _, line in read_lines(path))
    last_line = text.count("\n") + (not text.endswith("\n"))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: file has no rows") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}:1: header must have columns {', '.join(required)}; missing {', '.join(missing)} (found {', '.join(header)})")
    found = False
    while True:
        start = reader.line_num + 1  # a quoted field may run over lines: a row is named by its first
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise DataError(f"{path}:{start}: malformed CSV: a quoted field that starts on this line is never closed") from None
            raise DataError(f"{path}:{start}: malformed CSV: {exc}") from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            if reader.line_num > start and reader.line_num >= last_line:  # a quote opened here ran to the end of the file
                raise DataError(f"{path}:{start}: malformed CSV: a quoted field that starts on this line is never closed")
            raise DataError(f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), got {len(row)}")
        found = True
        yield start, dict(zip(header, row))
    if not found:
        raise DataError(f"{path}: file has no rows")


def read_records(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[str, dict]]:
    """("file:line", row) from a ``.jsonl``/``.json`` or ``.csv``/``.tsv`` file, checking ``required`` keys."""
    path = Path(path)
    suffix = data_suffix(path)
    if suffix in (".csv",):
        for number, row in read_csv(path, required):
            yield f"{path}:{number}", row
        return
    if suffix not in (".jsonl", ".json", ".ndjson"):
        check_file(path)
        raise DataError(f"{path}: unsupported file type '{suffix or '(none)'}'; expected .jsonl or .csv (either may be compressed: .gz, .bz2, .xz)")
    for number, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{path}:{number}: missing key '{missing[0]}' (expected keys: {', '.join(required)})")
        yield f"{path}:{number}", row


def data_files(value: str | list[str]) -> list[str]:
    """The files of a split (``task.train`` and the like): one path, or a list of them."""
    return [value] if isinstance(value, (str, Path)) else list(value)


def read_split(task, value: str | list[str]) -> list:
    """A split's examples: ``task.read`` of each of its files, in order."""
    return [example for path in data_files(value) for example in task.read(path)]


def split_sha256(value: str | list[str]) -> str:
    """What a run records of a split's data: one file's SHA-256, or for several files the SHA-256
    of their SHA-256s in order (so a changed, added, removed or reordered file shows)."""
    files = data_files(value)
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("\n".join(file_sha256(path) for path in files).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with check_file(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
