"""Tokenised splits, built once and read memory-mapped.

A task says how to read a file (``Task.read``) and how to encode a batch of examples
(``Task.encode``). This module turns a split's files into its features: the examples stream from
the files, are encoded :data:`CHUNK_EXAMPLES` at a time (as ``datasets.map`` batches) and written
to an Arrow file with Hugging Face ``datasets``' writer; training and evaluation then read it
memory-mapped. Nothing holds the split in Python lists, so memory stays flat as the corpus grows.

Each encode call is a *chunk*: a feature refers only to examples of its own chunk (a packed
language-model block to the texts it holds, a question-answering window to its question), and
``Task.gather`` is called once per chunk.

The Arrow file lives in a cache entry (:func:`cache_root`, ``features/<key>/``) whose key hashes
everything that determines the features: the data files' contents, the task (its name, options,
fitted state and source code), the tokenizer's files, ``max_length``, this layout's version and
lccore's. A second run, a resume or a later evaluation of the same data opens the entry instead of
tokenising. An entry is written to a ``.partial`` folder and renamed when complete; a lock lets
one process build it while others (the other ranks of a torchrun launch, or another run) wait.
A damaged entry is rebuilt, never used.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import fcntl
import hashlib
import inspect
import itertools
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import DataError
from . import data_files

#: Examples per ``Task.encode`` call (``datasets.map``'s default batch size): the unit of
#: encoding, of packing for language modelling and of ``Task.gather``.
CHUNK_EXAMPLES = 1000
#: The layout of a cache entry; a change makes older entries unused (they stay until cleared).
FORMAT = 1
#: Bytes of features buffered before they are written as one Arrow record batch.
RECORD_BATCH_BYTES = 16 * 2**20
ENTRY_FILE = "entry.json"
ARROW_FILE = "features.arrow"
FEATURES_DIR = "features"


def cache_root() -> Path:
    """Where lccore caches tokenised data: ``$LCCORE_CACHE``, else ``$XDG_CACHE_HOME/lccore``,
    else ``~/.cache/lccore``."""
    if os.environ.get("LCCORE_CACHE"):
        return Path(os.environ["LCCORE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "lccore"


class FeatureSet(Sequence):
    """A split's features, in file order: a memory-mapped Arrow table (or, for a task whose
    features hold values Arrow cannot, a list), their lengths and where each chunk ends."""

    def __init__(self, rows, lengths, chunk_ends: Sequence[int], examples: int, folder: Path | None = None):
        self.rows = rows  # a datasets Table over the Arrow file (input_ids, extra) or a list of feature dicts
        self.lengths = lengths  # numpy array of len(input_ids) per feature
        self.chunk_ends = list(chunk_ends)
        self.examples = examples
        self.folder = folder

    @classmethod
    def in_memory(cls, features: list[dict]) -> "FeatureSet":
        """Features already in a list (prediction inputs), as one chunk."""
        import numpy as np

        lengths = np.fromiter((len(f["input_ids"]) for f in features), dtype=np.int64, count=len(features))
        return cls(features, lengths, [len(features)], len(features))

    def chunks(self) -> list[tuple[int, int]]:
        """(start, end) feature ranges, one per ``Task.encode`` call."""
        return list(zip([0, *self.chunk_ends[:-1]], self.chunk_ends))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Several features at once (what torch's DataLoader asks for a batch)."""
        if isinstance(self.rows, list):
            return [self.rows[i] for i in indices]
        # datasets' gather/slice cut the record batches they need: pyarrow's Table.take would first
        # concatenate the whole memory-mapped table (reading and copying every feature per batch)
        if isinstance(indices, range) and indices.step == 1 and len(indices):
            taken = self.rows.fast_slice(indices.start, len(indices))
        else:
            taken = self.rows.fast_gather(list(indices))
        ids, extras = taken.column("input_ids").to_pylist(), taken.column("extra").to_pylist()
        return [{"input_ids": row_ids, **json.loads(extra)} for row_ids, extra in zip(ids, extras)]


def stream_examples(task, files) -> Iterator:
    """A split's examples, file after file, as ``task.read`` yields them (a task may return a
    list or a generator: a generator keeps a file of any size out of memory)."""
    for path in data_files(files):
        yield from task.read(path)


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def windows(rows: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` rows, as :func:`batched`; a bad row (a :class:`DataError` while
    reading) ends its window early, and is raised after that window is given: what streams its
    output (``predict``, ``generate --input``) writes the rows before it first."""
    chunk = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
    except DataError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


# --- the cache key -----------------------------------------------------------------------------


def fingerprint(*parts) -> str:
    """SHA-256 of JSON-serialisable ``parts`` (keys sorted), the name of a cache entry."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def task_source_sha256(task) -> str:
    """The source code a task encodes with: every ``.py`` file of the package defining its class
    (or its module alone), so that editing a task makes its cached features unused."""
    try:
        source = Path(inspect.getsourcefile(type(task)))
    except (TypeError, OSError):
        return "unknown"
    package_dir = source.parent if (source.parent / "__init__.py").exists() else None
    files = sorted(package_dir.rglob("*.py")) if package_dir else [source]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def task_fingerprint(name: str, task, options: dict) -> str:
    """What identifies a task's way of reading and encoding: its name, options and source code,
    with this cache layout and lccore's version."""
    from ..version import __version__

    return fingerprint(FORMAT, __version__, name, task_source_sha256(task), options)


def encoding_fingerprint(task_key: str, task, tokenizer, max_length: int) -> str:
    """What determines a split's features besides its files: the task (:func:`task_fingerprint`)
    and the state it was fitted to, the tokenizer, ``max_length`` and the chunk size."""
    return fingerprint(task_key, task.head_spec(), tokenizer_sha256(tokenizer), max_length, CHUNK_EXAMPLES)


def tokenizer_sha256(tokenizer) -> str:
    """SHA-256 of the files ``save_pretrained`` writes for ``tokenizer``."""
    import tempfile

    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="lccore-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- building and opening ----------------------------------------------------------------------


def split_features(
    task,
    examples: Callable[[], Iterable],
    *,
    tokenizer,
    max_length: int,
    key: str,
    name: str,
    cache: Path | None,
    progress: bool = True,
    expected_examples: int | None = None,
    num_proc: int = 1,
    source_bytes: int | None = None,
) -> FeatureSet:
    """The features of one split: opened from the cache entry ``key`` under ``cache`` when it is
    there and intact, else encoded from ``examples()`` (a fresh iterator of the split's examples)
    by ``num_proc`` processes and written there. ``cache=None``: nowhere to keep them: they are
    built in memory. The progress bar counts examples out of ``expected_examples``; when that is
    unknown (nothing has counted them yet), bytes out of ``source_bytes``, the split's files' size."""
    if cache is None:
        return _encode_in_memory(task, examples(), tokenizer, max_length, name, progress, expected_examples)
    folder = cache / FEATURES_DIR / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{key}.lock"):
        if folder.exists():
            try:
                return open_entry(folder)
            except DamagedEntry as exc:
                print(f"lccore: warning: cache entry {folder} is damaged ({exc}); rebuilding it", file=sys.stderr, flush=True)
                remove_entry(folder)
        return _build_entry(task, examples, tokenizer, max_length, folder, name, progress, expected_examples, num_proc, source_bytes)


class DamagedEntry(Exception):
    pass


class NotStorable(Exception):
    """A feature holds a value Arrow (JSON) cannot store."""


def open_entry(folder: Path) -> FeatureSet:
    """A complete cache entry, checked against what its ``entry.json`` recorded."""
    import numpy as np
    import pyarrow.compute as pc
    from datasets import Dataset

    try:
        entry = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            raise DamagedEntry(f"written in another layout ({entry.get('format') if isinstance(entry, dict) else '?'}, this lccore reads {FORMAT})")
        arrow = folder / ARROW_FILE
        if arrow.stat().st_size != entry["bytes"]:
            raise DamagedEntry(f"{ARROW_FILE} is {arrow.stat().st_size} bytes, {entry['bytes']} were written")
        table = Dataset.from_file(str(arrow)).data  # datasets' MemoryMappedTable
        if table.num_rows != entry["rows"] or entry["chunk_ends"][-1:] != [entry["rows"]]:
            raise DamagedEntry(f"{table.num_rows} rows, {entry['rows']} were written")
        lengths = pc.list_value_length(table.table.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    except DamagedEntry:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # unreadable JSON or Arrow
        raise DamagedEntry(str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__) from None
    return FeatureSet(table, lengths, entry["chunk_ends"], entry["examples"], folder)


def remove_entry(folder: Path) -> None:
    """Remove a cache entry lccore wrote (only its own files, then the folder if empty)."""
    for name in (ARROW_FILE, ENTRY_FILE):
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _encoded_chunks(task, examples: Iterable, tokenizer, max_length: int, bar) -> Iterator[tuple[list[dict], int]]:
    for chunk in batched(examples, CHUNK_EXAMPLES):
        features = task.encode(chunk, tokenizer, max_length)
        bar.update(len(chunk))
        yield features, len(chunk)


def _stored_chunks(task, examples: Iterable, tokenizer, max_length: int, bar, num_proc: int) -> Iterator[tuple[object, int, int]]:
    """(Arrow table of the chunk's features or None, features, examples) per chunk, in order.

    With ``num_proc`` > 1, worker processes forked from this one (they inherit the task and the
    tokenizer: nothing is pickled but the examples and the tables) encode the chunks while this
    process reads the next ones; at most two chunks per worker are in flight, so memory stays
    bounded whatever the split's size."""
    if num_proc <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for features, examples_in_chunk in _encoded_chunks(task, examples, tokenizer, max_length, bar):
            yield _chunk_table(features), len(features), examples_in_chunk
        return
    global _WORKER_STATE
    _WORKER_STATE = (task, tokenizer, max_length)
    # the fast tokenizer's own threads are off in the workers: say so, rather than have it warn
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context("fork").Pool(num_proc)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    try:
        in_flight: collections.deque = collections.deque()
        for chunk in batched(examples, CHUNK_EXAMPLES):
            in_flight.append((pool.apply_async(_encode_in_worker, (chunk,)), len(chunk)))
            if len(in_flight) >= 2 * num_proc:
                yield _finished(in_flight.popleft(), bar)
        while in_flight:
            yield _finished(in_flight.popleft(), bar)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        _WORKER_STATE = None


_WORKER_STATE = None  # (task, tokenizer, max_length), set before the pool forks


def _encode_in_worker(chunk: list) -> tuple[object, int]:
    task, tokenizer, max_length = _WORKER_STATE
    features = task.encode(chunk, tokenizer, max_length)
    return _chunk_table(features), len(features)


def _finished(pending: tuple, bar) -> tuple[object, int, int]:
    result, examples_in_chunk = pending
    table, rows = result.get()
    bar.update(examples_in_chunk)
    return table, rows, examples_in_chunk


def _chunk_table(features: list[dict]):
    """A chunk's features as the Arrow table the cache stores (None for a chunk without any)."""
    import pyarrow as pa

    if not features:
        return None
    return pa.table({"input_ids": _id_lists([f["input_ids"] for f in features]),
                     "extra": pa.array([_extra_json(f) for f in features], pa.string())})


def _encode_in_memory(task, examples, tokenizer, max_length, name, progress, expected) -> FeatureSet:
    import numpy as np

    from ..progress import progress_bar

    bar = progress_bar(total=expected, desc=f"tokenise {name}", unit="ex", enabled=progress, delay=1.0)
    rows, chunk_ends, count = [], [], 0
    for features, examples_in_chunk in _encoded_chunks(task, examples, tokenizer, max_length, bar):
        rows.extend(features)
        chunk_ends.append(len(rows))
        count += examples_in_chunk
    bar.close()
    lengths = np.fromiter((len(f["input_ids"]) for f in rows), dtype=np.int64, count=len(rows))
    return FeatureSet(rows, lengths, chunk_ends, count)


def _build_entry(task, examples, tokenizer, max_length, folder: Path, name, progress, expected, num_proc, source_bytes=None) -> FeatureSet:
    from datasets import Features, Sequence as ListOf, Value
    from datasets.arrow_writer import ArrowWriter

    from ..version import __version__
    from ..progress import progress_bar

    partial = _new_partial(folder)
    if expected is None and source_bytes:  # the examples are not counted yet: the bytes read give the rate and ETA
        bar = BytesBar(progress_bar(total=source_bytes, desc=f"tokenise {name}", unit="B", unit_scale=True, enabled=progress, delay=1.0))
    else:
        bar = progress_bar(total=expected, desc=f"tokenise {name}", unit="ex", enabled=progress, delay=1.0)
    schema = Features({"input_ids": ListOf(Value("int32")), "extra": Value("string")})
    chunk_ends, rows, count = [], 0, 0
    try:
        writer = ArrowWriter(features=schema, path=str(partial / ARROW_FILE), writer_batch_size=CHUNK_EXAMPLES)
        try:
            pending = []  # chunks not yet written: a record batch per few MB, not per chunk
            for table, features_in_chunk, examples_in_chunk in _stored_chunks(task, examples(), tokenizer, max_length, bar, num_proc):
                if table is not None:
                    pending.append(table)
                rows += features_in_chunk
                count += examples_in_chunk
                chunk_ends.append(rows)
                if sum(table.nbytes for table in pending) >= RECORD_BATCH_BYTES:
                    _write_pending(writer, pending)
            _write_pending(writer, pending)
            writer.finalize()
        finally:
            writer.close()
        if not rows:
            raise DataError(f"{name}: the split has no examples")
        entry = {
            "format": FORMAT, "lccore": __version__, "split": name, "rows": rows, "examples": count, "chunk_ends": chunk_ends,
            "bytes": (partial / ARROW_FILE).stat().st_size, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (partial / ENTRY_FILE).write_text(json.dumps(entry), encoding="utf-8")
        _complete(partial, folder)
    except NotStorable as exc:
        _discard(partial)
        bar.close()
        print(f"lccore: warning: task '{type(task).__name__}': {exc}; split '{name}' is kept in memory, not cached "
              "(features hold numbers, strings, lists and string-keyed dicts: docs/plugins.md)", file=sys.stderr, flush=True)
        return _encode_in_memory(task, examples(), tokenizer, max_length, name, progress, expected)
    except OSError as exc:
        _discard(partial)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"{folder.parent}: disk full while caching split '{name}'; free space, or point LCCORE_CACHE elsewhere, or set data.cache: false") from None
        raise
    except BaseException:
        _discard(partial)
        raise
    finally:
        bar.close()
    return open_entry(folder)


class BytesBar:
    """A bar over a split's bytes, moved by what :func:`lccore.data.read_lines` has read since it
    started, wherever the examples it is told of came from."""

    def __init__(self, bar):
        from . import bytes_read

        self.bar, self.bytes_read, self.start = bar, bytes_read, bytes_read()

    def update(self, examples: int) -> None:
        done = min(self.bytes_read() - self.start, self.bar.total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _write_pending(writer, pending: list) -> None:
    """Write the buffered chunks as one record batch. Few, large batches matter: opening the file
    reads each batch's header, and every read pulls in its own pages of the memory map."""
    import pyarrow as pa

    if pending:
        table = pa.concat_tables(pending)
        writer.write_table(table, writer_batch_size=table.num_rows)
        pending.clear()


def _id_lists(input_ids: list):
    import pyarrow as pa

    try:
        return pa.array(input_ids, pa.list_(pa.int32()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
        raise NotStorable(f"input_ids must be lists of token ids (int32): {str(exc).splitlines()[0][:120]}") from None


def _extra_json(feature: dict) -> str:
    """A feature's keys other than ``input_ids``, as JSON (numpy scalars and arrays as numbers and lists)."""
    try:
        return json.dumps({k: v for k, v in feature.items() if k != "input_ids"}, default=_plain, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise NotStorable(str(exc)) from None


def stored_form(feature: dict) -> dict:
    """``feature`` as the cache stores and gives it back (tuples become lists, numpy numbers plain
    ones); :class:`NotStorable` names what cannot be stored."""
    return {"input_ids": [int(i) for i in feature["input_ids"]], **json.loads(_extra_json(feature))}


def _plain(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    raise TypeError(f"a feature holds a {type(value).__name__}")


#: Marks a folder lccore is building an entry in: only such a folder is ever removed as left over.
PARTIAL_MARKER = ".lccore-partial"


def _new_partial(folder: Path) -> Path:
    """An empty folder to build the entry ``folder`` in (the caller holds the entry's lock). One
    that a killed build left (it holds lccore's marker) is removed first; anything else of that
    name is refused, never removed."""
    partial = folder.with_name(f"{folder.name}.partial")
    if partial.exists() or partial.is_symlink():
        if partial.is_symlink() or not (partial / PARTIAL_MARKER).is_file():
            raise DataError(f"{partial}: not a folder lccore was building (no {PARTIAL_MARKER}), so lccore will not remove it; move it away")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARKER).touch()
    return partial


def _complete(partial: Path, folder: Path) -> None:
    (partial / PARTIAL_MARKER).unlink()
    partial.rename(folder)


def _discard(partial: Path) -> None:
    if (partial / PARTIAL_MARKER).is_file():
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``, waited for without a time limit: the process holding it is
    tokenising, however long that takes, and the lock goes when that process ends."""
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_folder(folder: Path, build: Callable[[Path], object]) -> str:
    """A folder built once by ``build(partial_folder)`` and then reused: complete once renamed to
    ``folder`` (with an ``entry.json``), built under a lock so that concurrent runs build it once."""
    from ..version import __version__

    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{folder.name}.lock"):
        if not (folder / ENTRY_FILE).is_file():
            if folder.exists():  # lccore only ever renames a complete entry (with its entry.json) to this name
                raise DataError(f"{folder}: not an lccore cache entry (no {ENTRY_FILE}), so lccore will not replace it; move it away")
            partial = _new_partial(folder)
            try:
                build(partial)
                created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                (partial / ENTRY_FILE).write_text(json.dumps({"format": FORMAT, "lccore": __version__, "created": created}), encoding="utf-8")
                _complete(partial, folder)
            except BaseException:
                _discard(partial)
                raise
    return str(folder)


# --- what is cached, for `lccore cache` ---------------------------------------------------------

#: The kinds of entry under the cache root: tokenised splits, models built from scratch (their
#: tokenizer was trained on the data), and the task state fitted on a training split.
CACHE_KINDS = (FEATURES_DIR, "scratch", "fitted")


def cache_entries(root: Path | None = None) -> list[dict]:
    """Every complete entry under ``root``: kind, path, bytes, created, and for a split its name and rows."""
    root = root or cache_root()
    entries = []
    for kind in CACHE_KINDS:
        for path in sorted((root / kind).iterdir()) if (root / kind).is_dir() else []:
            complete = (path / ENTRY_FILE).is_file() if kind != "fitted" else path.suffix == ".json" and path.is_file()
            if not complete:  # a lock, a build under way, or nothing of lccore's
                continue
            entry = {}
            if path.is_dir():
                with contextlib.suppress(OSError, ValueError):
                    entry = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            else:
                size = path.stat().st_size
            entries.append({"kind": kind, "path": str(path), "bytes": size, "created": entry.get("created"),
                            "split": entry.get("split"), "rows": entry.get("rows"), "lccore": entry.get("lccore")})
    return entries


def clear_cache(root: Path | None = None) -> tuple[int, int]:
    """Remove the entries lccore wrote under ``root`` (skipping any a running process holds);
    returns (entries removed, bytes freed). Only lccore's own kinds of entry are touched: a
    file of another name in the cache folder stays."""
    root = root or cache_root()
    removed = freed = 0
    for entry in cache_entries(root):
        path = Path(entry["path"])
        lock = path.with_name(f"{path.name.removesuffix('.json')}.lock")
        with _try_lock(lock) as held:
            if not held:
                continue  # being built or read right now
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed, freed = removed + 1, freed + entry["bytes"]
    return removed, freed  # the lock files stay (empty): a process may be waiting on one


@contextlib.contextmanager
def _try_lock(path: Path):
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
