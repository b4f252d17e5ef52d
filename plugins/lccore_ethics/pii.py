"""The `pii` policy: pattern recognizers with validation, after Presidio's (EmailRecognizer,
PhoneRecognizer, CreditCardRecognizer with its Luhn check, IbanRecognizer with mod-97, IpRecognizer),
and person names from an lccore NER run. No model is downloaded."""

from __future__ import annotations

import ipaddress
import re

from . import decision, without_overlaps

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
# Card numbers: 13-19 digits in groups separated by single spaces or dashes.
CREDIT_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}(?![a-z0-9])")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]\d|\w)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"  # not the tail of a longer digit sequence (an invalid IBAN, a card)
    r"\+\d{1,3}[ .-]?(?:\(0?\d{1,4}\)|\d{1,4})(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958, +1 (555) 123-4567, +49 (0)30 1234567
    r"|00\d{1,3}[ .-]\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # 0044 20 7946 0958
    r"|\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567, 555.123.4567
    r"|\d{3} \d{3} \d{4}"  # 555 123 4567
    r"|0\d{1,4}(?:[ /.-]\d{2,8}){1,4}"  # national trunk prefix: 020 7946 0958, 030/12345678, 06-12345678, 01 23 45 67 89
    r")(?![\w])"
)
# Digits that follow a trunk-prefixed number only when grouped like a phone number, not a date (01.02.2024).
_DATE = re.compile(r"^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")

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


def find_credit_cards(text: str) -> list[dict]:
    found = []
    for match in CREDIT_CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
            found.append({"start": match.start(), "end": match.end(), "type": "CREDIT_CARD"})
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
    found = [{"start": m.start(), "end": m.end(), "type": "IP_ADDRESS"} for m in IPV4.finditer(text)]
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
        if not 7 <= len(digits) <= 15 or _DATE.match(value):
            continue
        found.append({"start": match.start(), "end": match.end(), "type": "PHONE"})
    return found


def find_emails(text: str) -> list[dict]:
    return [{"start": m.start(), "end": m.end(), "type": "EMAIL"} for m in EMAIL.finditer(text)]


FINDERS = {"EMAIL": find_emails, "CREDIT_CARD": find_credit_cards, "IBAN": find_ibans, "IP_ADDRESS": find_ips, "PHONE": find_phones}
# When two recognizers claim overlapping text, the more specific (validated) one wins.
PRIORITY = {"EMAIL": 0, "IBAN": 1, "CREDIT_CARD": 2, "IP_ADDRESS": 3, "PHONE": 4, "PERSON": 5}


def find_pii(text: str, types=FINDERS) -> list[dict]:
    """Non-overlapping PII matches ``{"start", "end", "type"}`` of the pattern types in ``types``."""
    found = [m for kind in types if kind in FINDERS for m in FINDERS[kind](text)]
    kept = []
    for match in sorted(found, key=lambda m: PRIORITY[m["type"]]):
        if all(match["end"] <= k["start"] or match["start"] >= k["end"] for k in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m["start"])


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
