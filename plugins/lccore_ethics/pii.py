"""The `pii` policy: pattern recognizers with validation, after Presidio's (EmailRecognizer,
PhoneRecognizer, CreditCardRecognizer with its Luhn check, IbanRecognizer with mod-97, IpRecognizer),
and person names from an lccore NER run. No model is downloaded."""

from __future__ import annotations

import bisect
import ipaddress
import re

from . import decision, without_overlaps
from .textnorm import Normalised

# Every repeat below is bounded, so one match attempt reads a bounded stretch of text and a scan is
# linear in the text's length (tests/test_ethics_hardening.py checks the patterns for unbounded
# repeats). The patterns run on the normalised text (textnorm): NFKC has already made fullwidth
# digits, "＠" and non-breaking spaces plain; the Unicode dashes stay and are listed here.
# Numbers may touch letters of scripts written without spaces ("番号は4111…です"), not Latin ones or digits.
WORD = r"\dA-Za-z_"
DASH = "\u2010-\u2015\u2212-"  # hyphen, non-breaking hyphen, figure dash, en and em dashes, minus, "-"
# Local part: RFC 5322 atext, letters of any script (SMTPUTF8); 64 characters at most (RFC 5321
# 4.5.3.1.1) within the pattern, a longer one is taken whole by find_emails. Domain: labels of
# letters of any script (IDN) or digits, 63 characters at most, "。" a dot as IDNA reads it.
LOCAL_CHARS = r"[\w.!#$%&'*+^~-]"
EMAIL = re.compile(
    r"\w" + LOCAL_CHARS + r"{0,63}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?[.\u3002]){1,32}"
    r"(?:[Xx][Nn]--[A-Za-z0-9-]{1,59}|[^\W\d_]{2,63})(?![\w-])"
)
_LOCAL_CHAR = re.compile(LOCAL_CHARS)
# Card numbers: 13-19 digits, in groups separated by spaces, a dash or a dot (spaces around it allowed).
_CARD_SEP = rf"(?:[ \t]{{0,2}}[.{DASH}][ \t]{{0,2}}|[ \t]{{1,2}})"
CREDIT_CARD = re.compile(rf"(?<![{WORD}{DASH}])\d(?:{_CARD_SEP}?\d){{12,18}}(?![{WORD}{DASH}])")
_DIGITS = re.compile(r"\d{1,19}")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}(?![a-z0-9])")
IPV4 = re.compile(rf"(?<![{WORD}.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![{WORD}.]\d|[{WORD}])")
IPV6 = re.compile(rf"(?<![{WORD}:])(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:(?:\d{{1,3}}\.){{3}}\d{{1,3}}|[0-9A-Fa-f]{{1,4}})?(?![{WORD}:]|\.\d)")
_SEP = rf"(?: ?[.{DASH}] ?| )"  # between the groups of a phone number: "-", ".", " - " or a space
PHONE = re.compile(
    rf"(?<![{WORD}+])(?<!\d[ .{DASH}])(?:"  # not the tail of a longer digit sequence (an invalid IBAN, a card)
    rf"\+\d{{1,3}}{_SEP}?(?:\(0?\d{{1,4}}\)|\d{{1,4}})(?:{_SEP}?\d{{2,4}}){{1,4}}"  # +44 20 7946 0958, +1 (555) 123-4567, +49 (0)30 1234567
    rf"|00\d{{1,3}}{_SEP}\d{{1,4}}(?:{_SEP}?\d{{2,4}}){{1,4}}"  # 0044 20 7946 0958
    rf"|\(\d{{3}}\) ?\d{{3}}{_SEP}\d{{4}}"  # (555) 123-4567
    rf"|\d{{3}} ?[.{DASH}] ?\d{{3}} ?[.{DASH}] ?\d{{4}}"  # 555-123-4567, 555.123.4567, 555 - 123 - 4567
    r"|\d{3} \d{3} \d{4}"  # 555 123 4567
    rf"|0\d{{1,4}}(?:(?: ?[/.{DASH}] ?| )\d{{2,8}}){{1,4}}"  # national trunk prefix: 020 7946 0958, 030/12345678, 06-12345678, 01 23 45 67 89
    rf")(?![{WORD}])"
)
# Digits that follow a trunk-prefixed number only when grouped like a phone number, not a date (01.02.2024).
_DATE = re.compile(rf"^\d{{1,2}} ?[./{DASH}] ?\d{{1,2}} ?[./{DASH}] ?\d{{2,4}}$")
# Context that makes a number something else, read in the 40 characters before (or 12 after) it:
# an order, invoice or tracking number is not a phone number, a version is not an IP address, an
# ISBN is not a card or a phone number.
CONTEXT = 40
_NUMBER_WORDS = r"(?:(?:no|nr|num|number|id|code)\b\.?\W{0,5})?"
NOT_PHONE = re.compile(
    r"(?:\b(?:order|invoice|inv|ticket|tracking|ref|reference|sku|serial|part|item|po|case|account|acct|transaction|txn|booking|"
    r"confirmation|customer|member|policy|claim|receipt|shipment|parcel|isbn|issn|batch|lot|model|product)s?\W{0,5}" + _NUMBER_WORDS + r"|#)$",
    re.IGNORECASE,
)
NOT_IP = re.compile(
    r"\b(?:v|ver|version|release|rel|build|firmware|fw|kernel|update|upgrade|upgraded|downgrade|downgraded|patch|sdk|api|bump|bumped)"
    r"\W{0,5}(?:(?:to|from|is|of)\W{1,3})?" + _NUMBER_WORDS + "$",
    re.IGNORECASE,
)
NOT_IP_AFTER = re.compile(r"[-+~](?:alpha|beta|rc|dev|pre|post|snapshot|final|release|build)", re.IGNORECASE)
NOT_CARD = re.compile(r"\bisbn(?:-?1[03])?\W{0,5}$", re.IGNORECASE)


def _before(text: str, start: int) -> str:
    return text[max(0, start - CONTEXT) : start]


PLACEHOLDERS = {t: f"<{t}>" for t in ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "PERSON")}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def isbn13_ok(digits: str) -> bool:
    return len(digits) == 13 and digits[:3] in ("978", "979") and sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(digits)) % 10 == 0


def find_credit_cards(text: str) -> list[dict]:
    found = []
    for match in CREDIT_CARD.finditer(text):
        if NOT_CARD.search(_before(text, match.start())):
            continue
        # A card next to other grouped digits (an expiry "12 25", a leading count) is tried
        # without the first or the last group as well.
        groups = [(match.start() + g.start(), match.start() + g.end()) for g in _DIGITS.finditer(match.group())]
        n = len(groups)
        for first, last in dict.fromkeys([(0, n), (1, n), (0, n - 1), (1, n - 1)]):
            if last - first < 1:
                continue
            start, end = groups[first][0], groups[last - 1][1]
            digits = "".join(text[a:b] for a, b in groups[first:last])
            if "." in text[start:end] and min((b - a for a, b in groups[first : last - 1]), default=4) < 4:
                continue  # dotted like a version or an OID (1.3.6.1.4.1.311), not like a card (4111.1111.1111.1111)
            if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits) and not isbn13_ok(digits):
                found.append({"start": start, "end": end, "type": "CREDIT_CARD"})
                break
    return found


def find_ibans(text: str) -> list[dict]:
    found, position = [], 0
    while (match := IBAN.search(text, position)) is not None:
        # The pattern may run into a following word in capitals: try shorter endings too.
        candidate, position = match.group(), match.start() + 1
        for end in range(len(candidate), 14, -1):
            if candidate[end - 1] in " -":
                continue
            if iban_ok(re.sub(r"[ -]", "", candidate[:end])):
                found.append({"start": match.start(), "end": match.start() + end, "type": "IBAN"})
                position = match.start() + end
                break
    return found


def find_ips(text: str) -> list[dict]:
    found = [
        {"start": m.start(), "end": m.end(), "type": "IP_ADDRESS"}
        for m in IPV4.finditer(text)
        if not NOT_IP.search(_before(text, m.start())) and not NOT_IP_AFTER.match(text, m.end(), m.end() + 12)
    ]
    for match in IPV6.finditer(text):
        try:
            ipaddress.IPv6Address(match.group())
        except ValueError:
            continue
        found.append({"start": match.start(), "end": match.end(), "type": "IP_ADDRESS"})
    return found


def find_phones(text: str) -> list[dict]:
    found = []
    for match in PHONE.finditer(text):
        value = match.group()
        digits = re.sub(r"\D", "", value)
        if not 7 <= len(digits) <= 15 or _DATE.match(value) or NOT_PHONE.search(_before(text, match.start())):
            continue
        found.append({"start": match.start(), "end": match.end(), "type": "PHONE"})
    return found


def find_emails(text: str) -> list[dict]:
    found, floor = [], 0
    if "@" not in text:
        return found
    for match in EMAIL.finditer(text):
        start = match.start()
        # A local part longer than the pattern reads (RFC 5321's 64) is still someone's address:
        # take it whole. Each character is stepped over once, as matches do not overlap.
        while start > floor and _LOCAL_CHAR.match(text, start - 1):
            start -= 1
        while not (text[start].isalnum() or text[start] == "_"):  # a quote or dot before the address
            start += 1
        found.append({"start": start, "end": match.end(), "type": "EMAIL"})
        floor = match.end()
    return found


FINDERS = {"EMAIL": find_emails, "CREDIT_CARD": find_credit_cards, "IBAN": find_ibans, "IP_ADDRESS": find_ips, "PHONE": find_phones}
# When two recognizers claim overlapping text, the more specific (validated) one wins.
PRIORITY = {"EMAIL": 0, "IBAN": 1, "CREDIT_CARD": 2, "IP_ADDRESS": 3, "PHONE": 4, "PERSON": 5}


def find_pii(text: str, types=FINDERS) -> list[dict]:
    """Non-overlapping PII matches ``{"start", "end", "type"}`` of the pattern types in ``types``,
    found in the normalised text (:mod:`.textnorm`) and given as offsets into ``text``. Where two
    types claim overlapping text, the one first in PRIORITY wins."""
    normal = Normalised(text)
    kept: list[dict] = []  # in text order, not overlapping: their ends are in order too
    for kind in sorted((k for k in types if k in FINDERS), key=PRIORITY.__getitem__):
        starts, added = [k["start"] for k in kept], []
        for match in without_overlaps(FINDERS[kind](normal.text)):
            before = bisect.bisect_left(starts, match["end"])  # kept[:before] start before this match ends
            if not before or kept[before - 1]["end"] <= match["start"]:
                added.append(match)
        kept = sorted(kept + added, key=lambda m: m["start"])
    return normal.map_spans(kept)


class PiiPolicy:
    def __init__(self, options):
        self.options = options
        self.stages = list(options.stages)
        self.types = list(options.types)
        self._ner = None
        if "PERSON" in self.types and not options.ner:
            self.types.remove("PERSON")  # names need an NER run; the pattern types still apply

    def _people(self, text: str) -> list[dict]:
        if not self.options.ner or "PERSON" not in self.types or not text.strip():
            return []
        if self._ner is None:
            from lccore.predictor import load

            self._ner = load(self.options.ner)
        record = self._ner.predict([text], guard=False)[0]
        wanted = set(self.options.ner_types)
        return [{"start": e["start"], "end": e["end"], "type": "PERSON"} for e in record.get("entities", ()) if e["type"] in wanted]

    def inspect(self, text: str, stage: str) -> dict:
        found = find_pii(text, self.types) + self._people(text)
        found = without_overlaps(sorted(found, key=lambda m: PRIORITY[m["type"]]))
        for match in found:
            match["reason"] = f"pii: {match['type']}"
        return decision(text, found, self.options.action, lambda m: PLACEHOLDERS[m["type"]])


def score(rows, types=FINDERS) -> dict:
    """Recall and precision per PII type of the pattern recognizers on labelled rows
    (``{"text", "spans": [{"start", "end", "type"}]}``); a prediction counts when type and
    offsets both match exactly."""
    counts = {}
    for row in rows:
        gold = {(s["start"], s["end"], s["type"]) for s in row["spans"]}
        found = {(m["start"], m["end"], m["type"]) for m in find_pii(row["text"], types)}
        for kind in {t for *_, t in gold | found}:
            c = counts.setdefault(kind, {"gold": 0, "found": 0, "correct": 0})
            c["gold"] += sum(t == kind for *_, t in gold)
            c["found"] += sum(t == kind for *_, t in found)
            c["correct"] += sum(t == kind for *_, t in gold & found)
    for c in counts.values():
        c["recall"] = c["correct"] / c["gold"] if c["gold"] else None
        c["precision"] = c["correct"] / c["found"] if c["found"] else None
    return dict(sorted(counts.items()))
