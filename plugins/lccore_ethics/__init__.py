"""First-party plugin: the `pii`, `toxicity` and `blocklist` ethics policies, and the bias audit.

Every policy works offline: patterns with checksums (Luhn, IBAN mod-97), better-profanity's word
list read as a data file, and optional judges (an NER run, a text-classification run) loaded from
a run directory the user names. Composing policies, the audit log and training-data filtering are
the kernel's (:mod:`lccore.ethics`).
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

import lccore

Action = Literal["redact", "block", "flag"]
Stage = Literal["training_data", "input", "output"]
ALL_STAGES = ["training_data", "input", "output"]
PII_TYPES = ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "PERSON"]


def _doc(text: str) -> dict:
    return {"doc": text}


@attrs.define
class PiiOptions:
    types: list[Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "PERSON"]] = attrs.field(
        factory=lambda: list(PII_TYPES), metadata=_doc("PII types looked for; PERSON needs `ner`.")
    )
    action: Action = attrs.field(default="redact", metadata=_doc("`redact` (typed placeholders such as `<EMAIL>`), `block` or `flag`."))
    ner: Optional[str] = attrs.field(default=None, metadata={"doc": "An lccore NER run directory (relative to the config file): its PER/PERSON entities are person names.", "path": True})
    ner_types: list[str] = attrs.field(factory=lambda: ["PER", "PERSON"], metadata=_doc("NER entity types counted as person names."))
    stages: list[Stage] = attrs.field(factory=lambda: list(ALL_STAGES), metadata=_doc("Stages the policy acts at."))


@attrs.define
class ToxicityOptions:
    action: Action = attrs.field(default="block", metadata=_doc("`block`, `redact` (the word becomes `<PROFANITY>`) or `flag`."))
    extra_words: list[str] = attrs.field(factory=list, metadata=_doc("Words added to better-profanity's list."))
    allow_words: list[str] = attrs.field(factory=list, metadata=_doc("Words removed from the list."))
    context: bool = attrs.field(
        default=True,
        metadata=_doc(
            "Identity terms, everyday words and mild insults on the list are toxic only in context: a statement hostile to a group, "
            "an insult aimed at someone, a threat (data/toxicity_context.yaml). false: every listed word is toxic on its own, as better-profanity decides."
        ),
    )
    classifier: Optional[str] = attrs.field(default=None, metadata={"doc": "A text_classification run directory (relative to the config file) used as a second judge.", "path": True})
    label: str = attrs.field(default="toxic", metadata=_doc("The classifier's label that means toxic."))
    threshold: float = attrs.field(default=0.5, metadata={"doc": "The classifier judges a text toxic when it predicts `label` with at least this score.", "min": 0.0, "max": 1.0})
    stages: list[Stage] = attrs.field(factory=lambda: list(ALL_STAGES), metadata=_doc("Stages the policy acts at."))


@attrs.define
class BlocklistOptions:
    terms: list[str] = attrs.field(factory=list, metadata=_doc("Words or phrases, matched as whole words."))
    patterns: list[str] = attrs.field(factory=list, metadata=_doc("Regular expressions (Python syntax), checked when the config is read."))
    case_sensitive: bool = attrs.field(default=False, metadata=_doc("Match terms and patterns case-sensitively."))
    action: Action = attrs.field(default="block", metadata=_doc("`block`, `redact` (the match becomes `<BLOCKED>`) or `flag`."))
    stages: list[Stage] = attrs.field(factory=lambda: list(ALL_STAGES), metadata=_doc("Stages the policy acts at."))

    def __attrs_post_init__(self):
        import re

        for i, pattern in enumerate(self.patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise lccore.ConfigError(f"blocklist patterns[{i}]: invalid regular expression {pattern!r}: {exc}") from None


@lccore.hookimpl
def register_ethics_policies(register):
    def make_pii(options):
        from .pii import PiiPolicy

        return PiiPolicy(options)

    def make_toxicity(options):
        from .toxicity import ToxicityPolicy

        return ToxicityPolicy(options)

    def make_blocklist(options):
        from .blocklist import BlocklistPolicy

        return BlocklistPolicy(options)

    register("pii", make_pii, options=PiiOptions, description="E-mail, phone, credit card (Luhn), IBAN (mod-97), IP addresses, and person names from an NER run.")
    register("toxicity", make_toxicity, options=ToxicityOptions, description="better-profanity's word list with obfuscation handling; identity terms and everyday words judged in context; optionally a classifier run as judge.")
    register("blocklist", make_blocklist, options=BlocklistOptions, description="User-given terms and regular expressions.")


def decision(text: str, found: list[dict], action: str, placeholder) -> dict:
    """A policy's decision record from its matches (``{"start", "end", "type", "reason"}``, not
    overlapping): allow when none, else ``action``; redaction swaps each match for ``placeholder(match)``."""
    if not found:
        return {"decision": "allow", "redacted": text, "reasons": [], "spans": []}
    found = sorted(found, key=lambda m: m["start"])
    redacted, edits = text, []
    if action == "redact":
        pieces, last = [], 0
        for match in found:
            edits.append([match["start"], match["end"], placeholder(match)])
            pieces += [text[last : match["start"]], edits[-1][2]]
            last = match["end"]
        redacted = "".join(pieces) + text[last:]
    reasons = list(dict.fromkeys(m["reason"] for m in found))
    record = {"decision": action, "redacted": redacted, "reasons": reasons, "spans": [{k: m[k] for k in ("start", "end", "type")} for m in found]}
    if edits:  # lets the kernel map later policies' offsets back in linear time
        record["edits"] = edits
    return record


def without_overlaps(found: list[dict]) -> list[dict]:
    """Earlier matches first, and of two starting together the longer; overlapping later ones go."""
    kept, end = [], -1
    for match in sorted(found, key=lambda m: (m["start"], -(m["end"] - m["start"]))):
        if match["start"] >= end:
            kept.append(match)
            end = match["end"]
    return kept


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)
