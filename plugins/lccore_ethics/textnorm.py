"""Text as the pattern-based policies see it, and the way back to the original offsets.

Invisible characters (U+200B, U+2060, the soft hyphen: every format character, category Cf, and
the other default-ignorable code points) split a card number or an e-mail address for a pattern
while a reader never sees them; fullwidth digits (``４１１１``), ``＠`` or mathematical letters
look like plain ones to a reader but not to ``[0-9]``. The policies therefore match on the
NFKC-normalised text with the invisible characters removed, then map each match back so that a
redaction removes the whole original span, invisible characters inside it included.

The work is linear in the length of the text: ASCII (already normal, and free of format
characters) is copied as it is, and only the non-ASCII stretches that NFKC, the invisible
characters or combining marks change are rebuilt, one base character with its marks at a time.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
import unicodedata

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Default_Ignorable_Code_Point beyond category Cf (Unicode's DerivedCoreProperties.txt): the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors,
# variation selectors and the tag block.
_OTHER_IGNORABLE = "\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0000-\U000e0fff"


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[re.Pattern, re.Pattern]:
    """Runs of invisible characters, and the combining marks (category M), read once from the
    Unicode tables Python ships (as ranges: a class of single characters is scanned one by one)."""
    formats: list[list[int]] = []
    marks: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        ranges = formats if category == "Cf" else marks if category[0] == "M" else None
        if ranges is None:
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def char_class(ranges) -> str:
        return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)

    return re.compile(f"[{char_class(formats)}{_OTHER_IGNORABLE}]+"), re.compile(f"[{char_class(marks)}]")


def invisible() -> re.Pattern:
    return _classes()[0]


@functools.lru_cache(maxsize=4096)
def _nfkc(char: str) -> str:
    return unicodedata.normalize("NFKC", char)


class Normalised:
    """``text`` normalised, with :meth:`span` mapping offsets into it back to the original."""

    def __init__(self, original: str):
        self.original = original
        self._out: list[str] = []
        # (start in the normalised text, original start, original end, identity): an identity
        # piece maps offset by offset (its characters were kept or replaced one for one), any
        # other piece is one rebuilt cluster.
        self._pieces: list[tuple[int, int, int, bool]] = []
        self._size = 0
        if original.isascii():
            self._emit(original, 0, len(original), True)
        else:
            position = 0
            for gap in invisible().finditer(original):
                self._segment(position, gap.start())
                position = gap.end()
            self._segment(position, len(original))
        self.text = "".join(self._out) if len(self._out) != 1 else self._out[0]
        self._pieces = self._pieces or [(0, 0, 0, True)]
        self._starts = [piece[0] for piece in self._pieces]
        del self._out

    def _emit(self, text: str, start: int, end: int, identity: bool) -> None:
        if text:
            self._out.append(text)
            self._pieces.append((self._size, start, end, identity))
            self._size += len(text)

    def _segment(self, start: int, end: int) -> None:
        """Normalise ``original[start:end]``, which holds no invisible character."""
        original, done = self.original, start
        marks = _classes()[1]
        for run in _NON_ASCII.finditer(original, start, end):
            chunk = run.group()
            if not marks.search(chunk):
                if unicodedata.is_normalized("NFKC", chunk):
                    continue  # copied with the ASCII around it
                # Most changes are one character for one (fullwidth forms, mathematical letters).
                replaced = "".join(map(_nfkc, chunk))
                if len(replaced) == len(chunk) and unicodedata.normalize("NFKC", chunk) == replaced and not marks.search(replaced):
                    self._emit(original[done : run.start()], done, run.start(), True)
                    self._emit(replaced, run.start(), run.end(), True)
                    done = run.end()
                    continue
            # Otherwise one base character with its combining marks at a time (the character before
            # the run may take a mark from it: "o" + U+0308 is "ö"); marks NFKC does not compose
            # into a letter are left out, as a pattern cannot read through them ("4" + U+20DD).
            i = run.start() - 1 if run.start() > done else run.start()
            self._emit(original[done:i], done, i, True)
            while i < run.end():
                j = i + 1
                while j < run.end() and marks.match(original, j):
                    j += 1
                cluster = marks.sub("", unicodedata.normalize("NFKC", original[i:j]))
                self._emit(cluster, i, j, len(cluster) == j - i == 1)
                i = j
            done = run.end()
        self._emit(original[done:end], done, end, True)

    def _piece(self, position: int):
        return self._pieces[bisect.bisect_right(self._starts, position) - 1]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original offsets of the normalised text's ``[start, end)`` (``end > start``): a
        match that touches a rebuilt cluster covers all of it."""
        at, first, _, same = self._piece(start)
        original_start = first + start - at if same else first
        at, first, last, same = self._piece(end - 1)
        original_end = first + end - at if same else last
        return original_start, original_end

    def map_spans(self, found: list[dict]) -> list[dict]:
        """``found`` (dicts with ``start`` and ``end`` in the normalised text) in original offsets."""
        if len(self._pieces) == 1:
            return found
        for match in found:
            match["start"], match["end"] = self.span(match["start"], match["end"])
        return found
