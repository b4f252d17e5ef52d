"""The `plugin_name` ethics policy for lccore: regular expressions that flag, redact or block."""

from __future__ import annotations

import re
from typing import Literal

import attrs

import lccore


@attrs.define
class PluginNameOptions:
    patterns: list[str] = attrs.field(
        # Long digit runs: account, card or ID numbers.
        factory=lambda: [r"\b\d{8,}\b"],
        metadata={"doc": "Regular expressions (Python syntax), matched ignoring case."},
    )
    action: Literal["flag", "redact", "block"] = attrs.field(default="redact", metadata={"doc": "What a match does."})
    stages: list[str] = attrs.field(
        factory=lambda: ["training_data", "input", "output"], metadata={"doc": "Stages the policy acts at; elsewhere it allows everything."}
    )


class PluginNamePolicy:
    def __init__(self, options: PluginNameOptions):
        self.options = options
        try:
            self.patterns = [re.compile(p, re.IGNORECASE) for p in options.patterns]
        except re.error as exc:
            raise lccore.ConfigError(f"ethics 'plugin_name': patterns: {exc}") from None

    def inspect(self, text: str, stage: str) -> dict:
        if stage not in self.options.stages:
            return {"decision": "allow", "reasons": [], "spans": []}
        spans = sorted(
            ({"start": m.start(), "end": m.end(), "pattern": p.pattern} for p in self.patterns for m in p.finditer(text) if m.end() > m.start()),
            key=lambda span: span["start"],
        )
        if not spans:
            return {"decision": "allow", "reasons": [], "spans": []}
        decision = {"decision": self.options.action, "reasons": [f"'plugin_name': {len(spans)} match(es) at {stage}"], "spans": spans}
        if self.options.action == "redact":
            redacted, position = [], 0
            for span in spans:
                if span["start"] >= position:  # overlapping matches are redacted once
                    redacted.append(text[position : span["start"]] + "[REDACTED]")
                    position = span["end"]
            decision["redacted"] = "".join(redacted) + text[position:]
        return decision


@lccore.hookimpl
def register_ethics_policies(register):
    register("plugin_name", PluginNamePolicy, options=PluginNameOptions, description="Flag, redact or block text matching regular expressions.")
