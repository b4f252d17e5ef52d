"""The `blocklist` policy: user-given terms (whole words) and regular expressions."""

from __future__ import annotations

import re

from . import decision, without_overlaps


class BlocklistPolicy:
    def __init__(self, options):
        self.options = options
        self.stages = list(options.stages)
        flags = 0 if options.case_sensitive else re.IGNORECASE
        self.rules = [(f"blocklist: term {term!r}", re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, term.split())) + r"(?!\w)", flags)) for term in options.terms if term.strip()]
        # Patterns were compiled once already when the options were read: a bad one fails there.
        self.rules += [(f"blocklist: pattern {i}", re.compile(pattern, flags)) for i, pattern in enumerate(options.patterns)]

    def inspect(self, text: str, stage: str) -> dict:
        found = [
            {"start": m.start(), "end": m.end(), "type": "BLOCKLIST", "reason": reason}
            for reason, rule in self.rules
            for m in rule.finditer(text)
            if m.end() > m.start()
        ]
        return decision(text, without_overlaps(found), self.options.action, lambda m: "<BLOCKED>")
