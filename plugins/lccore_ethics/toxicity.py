"""The `toxicity` policy: better-profanity's word list (read as a data file: importing the package
is not needed) with obfuscation handling, matched by whole words so that "class", "assess" and
"Scunthorpe" pass; optionally an lccore text-classification run as a second judge. Words are
looked for in the normalised text (:mod:`.textnorm`: no zero-width characters, fullwidth letters
made plain), each token once: the work is linear in the length of the text."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import lccore

from . import decision
from .textnorm import Normalised

LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s", "5": "s", "7": "t", "+": "t"})
# A token: letters, digits and the characters people put inside a word to hide it (f*ck, f.u.c.k, sh!t).
TOKEN = re.compile(r"[A-Za-z0-9@$!*#+](?:[A-Za-z0-9@$!*#+._'-]*[A-Za-z0-9@$!*#+])?")
MASK = "*#"
# Verdicts remembered for up to 65,536 tokens of up to 64 characters (a text repeats its words).
CACHE_SIZE, CACHED_LENGTH = 65536, 64
SEPARATORS = "._'-"


def wordlist_path() -> Path:
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or not spec.submodule_search_locations:
        raise lccore.ConfigError("the toxicity policy needs better-profanity's word list: pip install 'lccore[ethics]' (or better-profanity)")
    return Path(spec.submodule_search_locations[0]) / "profanity_wordlist.txt"


@functools.lru_cache(maxsize=1)
def default_words() -> frozenset[str]:
    lines = wordlist_path().read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip())


def collapse(word: str) -> str:
    """Runs of a repeated letter as one: "fuuuuck" -> "fuck"."""
    return re.sub(r"(.)\1+", r"\1", word)


class WordList:
    def __init__(self, words):
        words = {w.lower() for w in words}
        self.single = {w for w in words if " " not in w}
        self.collapsed = {collapse(w): w for w in self.single}
        self.by_length: dict[int, list[str]] = {}
        for word in self.single:
            self.by_length.setdefault(len(word), []).append(word)
        phrases = sorted((w for w in words if " " in w), key=len, reverse=True)
        self._seen: dict[str, str | None] = {}
        self.phrases = re.compile(r"(?<!\w)(?:" + "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases) + r")(?!\w)", re.I) if phrases else None

    def match(self, token: str) -> str | None:
        """The listed word ``token`` spells, seen through masking, separators, leetspeak and repeats."""
        lowered = token.lower()
        if len(lowered) > CACHED_LENGTH:
            return self._match(lowered)
        if lowered not in self._seen:
            if len(self._seen) >= CACHE_SIZE:
                self._seen.clear()
            self._seen[lowered] = self._match(lowered)
        return self._seen[lowered]

    def _match(self, lowered: str) -> str | None:
        if lowered in self.single:
            return lowered
        joined = "".join(c for c in lowered if c not in SEPARATORS)
        if any(c in MASK for c in joined):  # f*ck, f**k, sh#t: each mask character stands for one letter
            candidates = self.by_length.get(len(joined), ())
            if candidates and re.search("[a-z]", joined.translate(LEET)):
                pattern = re.compile("".join("[a-z]" if c in MASK else re.escape(c) for c in joined.translate(LEET)))
                return next((word for word in candidates if pattern.fullmatch(word)), None)
            return None
        # A plain number is a number (a price, a year, "455"), not leetspeak.
        for candidate in dict.fromkeys((joined,) if joined.isdigit() else (joined, joined.translate(LEET))):
            if candidate in self.single:
                return candidate
            if re.search(r"([a-z])\1\1", candidate) and collapse(candidate) in self.collapsed:
                return self.collapsed[collapse(candidate)]
        # Separators between single letters (f.u.c.k) were joined above; a separator between two
        # words (hello.fuck) leaves each part to be a word of its own.
        if any(c in SEPARATORS for c in lowered):
            for part in re.split(r"[._'-]+", lowered):
                if part and part != lowered and (word := self.match(part)):
                    return word
        return None

    def find(self, text: str) -> list[dict]:
        """The listed words and phrases in ``text`` (``{"start", "end", "word"}``), in one pass over
        its tokens: a token inside a phrase already found is skipped."""
        phrases = [] if self.phrases is None else [{"start": m.start(), "end": m.end(), "word": m.group().lower()} for m in self.phrases.finditer(text)]
        found, next_phrase = list(phrases), 0
        for token in TOKEN.finditer(text):
            while next_phrase < len(phrases) and phrases[next_phrase]["end"] <= token.start():
                next_phrase += 1
            if next_phrase < len(phrases) and phrases[next_phrase]["start"] <= token.start():
                continue
            word = self.match(token.group())
            if word:
                found.append({"start": token.start(), "end": token.end(), "word": word})
        return found


class ToxicityPolicy:
    def __init__(self, options):
        self.options = options
        self.stages = list(options.stages)
        words = (default_words() | {w.lower() for w in options.extra_words}) - {w.lower() for w in options.allow_words}
        self.words = WordList(words)
        self._classifier = None

    def _judge(self, text: str) -> dict | None:
        if not self.options.classifier or not text.strip():
            return None
        if self._classifier is None:
            from lccore.predictor import load

            self._classifier = load(self.options.classifier)
        record = self._classifier.predict([text], guard=False)[0]
        if record.get("label") == self.options.label and record.get("score", 0.0) >= self.options.threshold:
            return record
        return None

    def inspect(self, text: str, stage: str) -> dict:
        # Matched on the normalised text (zero-width characters out, fullwidth letters plain),
        # reported and redacted at the original offsets.
        normal = Normalised(text)
        found = normal.map_spans([{**m, "type": "PROFANITY", "reason": "toxicity: word list"} for m in self.words.find(normal.text)])
        result = decision(text, found, self.options.action, lambda m: "<PROFANITY>")
        judged = self._judge(text)
        if judged is not None:
            reason = f"toxicity: classifier {self.options.label} {judged['score']:.2f} >= {self.options.threshold}"
            result["reasons"].append(reason)
            result["spans"].append({"start": 0, "end": len(text), "type": "TOXIC"})
            # A whole text judged toxic cannot be redacted word by word: it is blocked (or flagged).
            result["decision"] = "flag" if self.options.action == "flag" else "block"
        return result
