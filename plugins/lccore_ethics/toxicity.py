"""The `toxicity` policy: better-profanity's word list (read as a data file: importing the package
is not needed) with obfuscation handling, matched by whole words so that "class", "assess" and
"Scunthorpe" pass; optionally an lccore text-classification run as a second judge. Words are
looked for in the normalised text (:mod:`.textnorm`: no zero-width characters, fullwidth letters
made plain), each token once: the work is linear in the length of the text.

With ``context: true`` (the default) the list's identity terms, everyday words and mild insults
(``data/toxicity_context.yaml``) are not toxic on their own: context decides. A statement hostile
to a group ("gay people are vermin", "I hate Muslims"), an insult aimed at someone ("you stupid
...") and a threat ("I'll kill you") are toxic, and the rules treat every group alike, so that
swapping one identity term for another never changes a decision (benchmarks/toxicity_fairness.py)."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import lccore

from . import decision, without_overlaps
from .textnorm import Normalised

LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s", "5": "s", "7": "t", "+": "t"})
# A token: letters, digits and the characters people put inside a word to hide it (f*ck, f.u.c.k, sh!t).
TOKEN = re.compile(r"[A-Za-z0-9@$!*#+](?:[A-Za-z0-9@$!*#+._'-]*[A-Za-z0-9@$!*#+])?")
MASK = "*#"
MONEY = re.compile(r"[a-z]{0,3}\$[0-9][0-9.,]*[kmb]?n?")
# Verdicts remembered for up to 65,536 tokens of up to 64 characters (a text repeats its words).
CACHE_SIZE, CACHED_LENGTH = 65536, 64
SEPARATORS = "._'-"


def wordlist_path() -> Path:
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or not spec.submodule_search_locations:
        raise lccore.ConfigError("the toxicity policy needs better-profanity's word list: pip install 'lccore[ethics]' (or better-profanity)")
    return Path(spec.submodule_search_locations[0]) / "profanity_wordlist.txt"


CONTEXT_FILE = Path(__file__).with_name("data") / "toxicity_context.yaml"
# A word of the context rules: letters (leetspeak digits and marks too), with an apostrophe part (you're, i'll).
CONTEXT_TOKEN = re.compile(r"[a-z0-9@$!*#+]+(?:'[a-z]+)?")
CLAUSE_END = re.compile(r"[.!?;\n]")
YOU = frozenset(["you", "you're", "youre", "ur", "u", "your", "yo", "ya", "yourself"])
# Words that may stand between "you" and an insult, or between a copula and what it says of a group.
FILLERS = frozenset(
    "are 're r is am be being such a an so the total complete fucking fuckin big little absolute utter really very "
    "just like look looks sound sounds all nothing but no better than less more of bunch literally basically simply "
    "truly absolutely always still only".split()
)
# Words that may stand between a hostile verb and the group it names: "kill all the ...", "get rid of those ...".
DETERMINERS = frozenset("all the those these every each most any of out off them".split())
ORDERS = frozenset("let's lets should must gotta need needs".split())


@functools.lru_cache(maxsize=1)
def context_lists() -> dict[str, frozenset[str]]:
    import yaml

    lists = yaml.safe_load(CONTEXT_FILE.read_text(encoding="utf-8"))  # the plugin's own file
    return {name: frozenset(str(word).lower() for word in words) for name, words in lists.items()}


@functools.lru_cache(maxsize=1)
def default_words() -> frozenset[str]:
    lines = wordlist_path().read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip())


def collapse(word: str) -> str:
    """Runs of a repeated letter as one: "fuuuuck" -> "fuck"."""
    return re.sub(r"(.)\1+", r"\1", word)


class WordList:
    def __init__(self, words, keep_out=frozenset()):
        words = {w.lower() for w in words}
        self.keep_out = frozenset(keep_out)  # words never matched, by any spelling rule (a place: "Lesbos" is not a plural)
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
        if lowered in self.keep_out:
            return None
        joined = "".join(c for c in lowered if c not in SEPARATORS)
        if any(c in MASK for c in joined):  # f*ck, f**k, sh#t: each mask character stands for one letter
            candidates = self.by_length.get(len(joined), ())
            if candidates and re.search("[a-z]", joined.translate(LEET)):
                pattern = re.compile("".join("[a-z]" if c in MASK else re.escape(c) for c in joined.translate(LEET)))
                return next((word for word in candidates if pattern.fullmatch(word)), None)
            return None
        if MONEY.fullmatch(lowered):  # "a$5.44", "us$300": an amount, not leetspeak
            return None
        # A plain number is a number (a price, a year, "455"), not leetspeak.
        for candidate in dict.fromkeys((joined,) if joined.isdigit() else (joined, joined.translate(LEET))):
            if candidate in self.single:
                return candidate
            if re.search(r"([a-z])\1\1", candidate) and len(collapse(candidate)) >= 3 and collapse(candidate) in self.collapsed:  # not "AAAS"
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


class Context:
    """The context rules over a text's clauses, one pass over its words (windows of a few words
    around each): hostility to a group, insults aimed at someone, threats. Each finding is
    ``{"start", "end", "word", "reason"}`` at offsets of the text given."""

    def __init__(self, allow_words: set[str]):
        lists = context_lists()
        self.lists = {name: words - allow_words for name, words in lists.items()}
        self.insults = WordList(self.lists["insults"])
        self.multiword_adjectives = {tuple(a.split()) for a in self.lists["identity_adjectives"] if " " in a}
        self.self_harm = re.compile(r"(?<!\w)(?:" + "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(self.lists["self_harm"], key=len, reverse=True)) + r")(?!\w)")

    def find(self, text: str) -> list[dict]:
        # lower-cased one character for one ("İ".lower() is two), so that offsets stay
        lowered = (text.lower() if text.isascii() else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)).replace("\u2019", "'")
        found = [{"start": m.start(), "end": m.end(), "word": m.group(), "reason": "toxicity: threat"} for m in self.self_harm.finditer(lowered)]
        start = 0
        for end in [m.start() for m in CLAUSE_END.finditer(lowered)] + [len(lowered)]:
            if end > start:
                found += self._clause([(m.start(), m.end(), m.group().translate(LEET) if not m.group().isalpha() else m.group()) for m in CONTEXT_TOKEN.finditer(lowered, start, end)])
            start = end + 1
        return found

    def _clause(self, tokens: list[tuple[int, int, str]]) -> list[dict]:
        lists, words, found = self.lists, [t[2] for t in tokens], []
        verbs = lists["copulas"] | lists["modals"]

        def hit(first: int, last: int, reason: str) -> None:
            found.append({"start": tokens[first][0], "end": tokens[last][1], "word": " ".join(words[first : last + 1]), "reason": reason})

        for i, word in enumerate(words):
            group_end = self._group_at(words, i)
            if group_end is not None:
                # a hostile verb before it: "I hate gay people", "kill all the ..." (an order or a first person: not "a plot to kill ...")
                j = i - 1
                while j >= 0 and words[j] in DETERMINERS and i - j <= 3:
                    j -= 1
                ordered = j <= 1 or any(w in lists["first_person"] or w in ORDERS for w in words[max(0, j - 3) : j])
                if j >= 0 and (words[j] in lists["hateful_verbs"] or (words[j] in lists["violent_verbs"] and ordered)):
                    hit(j, group_end, "toxicity: hostile to a group")
                    continue
                # a slur-like adjective before it: "filthy immigrants"
                if i >= 1 and words[i - 1] in lists["slur_adjectives"]:
                    hit(i - 1, group_end, "toxicity: hostile to a group")
                    continue
                # a copula then a dehumanising word ("... are vermin"), or a modal then a harm ("... should die")
                k = group_end + 1
                if k + 1 < len(words) and words[k] not in verbs and words[k + 1] in verbs:
                    k += 1  # "Muslims really are ..."
                if k < len(words) and words[k] in verbs:
                    m = k + 1
                    while m < len(words) and (words[m] in FILLERS or words[m] == "to") and m - k <= 4:
                        m += 1
                    wished = words[k] in lists["modals"] and words[m : m + 1] and words[m] in lists["wished_harm"]
                    if m < len(words) and (words[m] in lists["dehumanising"] or wished):
                        hit(i, m, "toxicity: hostile to a group")
                        continue
            # an insult aimed at someone: "you stupid ...", "you're such a moron", "your ugly face"
            if self.insults.match(word) and i >= 1:
                j = i - 1
                while j >= 0 and words[j] in FILLERS and i - j <= 4:
                    j -= 1
                if j >= 0 and words[j] in YOU:
                    hit(j, i, "toxicity: insult aimed at someone")
                    continue
            # a threat: "I'll kill you", "we will hurt you"
            if word in lists["threat_verbs"] and i + 1 < len(words) and words[i + 1] in lists["threat_targets"]:
                if any(w in lists["first_person"] for w in words[max(0, i - 6) : i]):
                    hit(i, i + 1, "toxicity: threat")
        return found

    def _group_at(self, words: list[str], i: int) -> int | None:
        """The index of the last word of a group named at ``i`` ("muslims", "gay people",
        "puerto rican families"), or None."""
        lists = self.lists
        if words[i] in lists["group_nouns"] and not (i + 1 < len(words) and words[i + 1] in lists["people"]):
            return i
        for length in (2, 1):
            if tuple(words[i : i + length]) in self.multiword_adjectives or (length == 1 and words[i] in lists["identity_adjectives"]):
                if i + length < len(words) and words[i + length] in lists["people"]:
                    return i + length
        return None


class ToxicityPolicy:
    def __init__(self, options):
        self.options = options
        self.stages = list(options.stages)
        allowed = {w.lower() for w in options.allow_words}
        words = (default_words() | {w.lower() for w in options.extra_words}) - allowed
        self.context = Context(allowed) if options.context else None
        if self.context is not None:  # these words decide in context, not alone (an extra word the user named stays)
            words -= self.context.lists["identity"] | self.context.lists["insults"] | self.context.lists["neutral"]
            words |= {w.lower() for w in options.extra_words}
        self.words = WordList(words, keep_out=(self.context.lists["neutral"] | self.context.lists["identity"]) - words if self.context else ())
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
        found = [{**m, "type": "PROFANITY", "reason": "toxicity: word list"} for m in self.words.find(normal.text)]
        if self.context is not None:
            found = without_overlaps(found + [{**m, "type": "TOXIC"} for m in self.context.find(normal.text)])
        found = normal.map_spans(found)
        result = decision(text, found, self.options.action, lambda m: "<PROFANITY>")
        judged = self._judge(text)
        if judged is not None:
            reason = f"toxicity: classifier {self.options.label} {judged['score']:.2f} >= {self.options.threshold}"
            result["reasons"].append(reason)
            result["spans"].append({"start": 0, "end": len(text), "type": "TOXIC"})
            # A whole text judged toxic cannot be redacted word by word: it is blocked (or flagged).
            result["decision"] = "flag" if self.options.action == "flag" else "block"
        return result
