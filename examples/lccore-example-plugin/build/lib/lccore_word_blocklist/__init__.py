"""The `word_blocklist` ethics policy: block or redact texts that contain listed words.

A third-party plugin in its own distribution: it imports only lccore's public API."""

from __future__ import annotations

import re
from typing import Literal

import attrs

import lccore


@attrs.define
class WordBlocklistOptions:
    words: list[str] = attrs.field(factory=lambda: ["dreadful"], metadata={"doc": "Words matched whole, ignoring case."})
    action: Literal["block", "redact", "flag"] = attrs.field(default="redact", metadata={"doc": "What a match does."})


class WordBlocklist:
    def __init__(self, options: WordBlocklistOptions):
        self.options = options
        words = "|".join(re.escape(w) for w in options.words) or r"(?!x)x"
        self.pattern = re.compile(rf"\b(?:{words})\b", re.IGNORECASE)

    def inspect(self, text: str, stage: str) -> dict:
        spans = [{"start": m.start(), "end": m.end(), "text": m.group(0)} for m in self.pattern.finditer(text)]
        if not spans:
            return {"decision": "allow", "reasons": [], "spans": []}
        decision = {"decision": self.options.action, "reasons": [f"blocklisted word at {stage}"], "spans": spans}
        if self.options.action == "redact":
            decision["redacted"] = self.pattern.sub(lambda m: "*" * len(m.group(0)), text)
        return decision


@lccore.hookimpl
def register_ethics_policies(register):
    register("word_blocklist", WordBlocklist, options=WordBlocklistOptions, description="Block, redact or flag texts containing listed words.")
