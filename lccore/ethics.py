"""Ethics policies applied in order: one decision per text, an audit trail, training-data filtering.

A policy (registered through ``register_ethics_policies``) has ``inspect(text, stage) -> dict``
returning ``{"decision": "allow"|"flag"|"redact"|"block", "redacted": str, "reasons": [str],
"spans": [{"start", "end", "type"}]}`` with offsets into the text it was given, and optionally
``stages`` (the stages it acts at; default all). Policies compose in order: each sees the text as
the previous ones redacted it, and the strictest decision wins (block > redact > flag > allow).
The spans of the combined decision are mapped back to offsets into the *original* text: a span
that falls inside an earlier policy's placeholder covers the whole redacted region.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError

STAGES = ("training_data", "input", "output")
DECISIONS = ("allow", "flag", "redact", "block")
_RANK = {name: i for i, name in enumerate(DECISIONS)}


def strictest(decisions: Iterable[str]) -> str:
    return max(decisions, key=_RANK.__getitem__, default="allow")


def policy_specs(items: list) -> list[tuple[str, dict]]:
    """``[name, {name: ..., option: ...}, ...]`` (the ``ethics:`` config list) as (name, options) pairs."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"ethics: expected a list of policies, got {items!r}")
    specs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            specs.append((item, {}))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            specs.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
        else:
            raise ConfigError(f"ethics[{i}]: expected a policy name or a mapping with 'name', got {item!r}")
    return specs


def build_policies(engine, items: list) -> list[tuple[str, Any]]:
    """(name, policy) pairs built through ``engine`` from an ``ethics:`` config list; options are
    validated against each policy's options class (errors name ``ethics[i].key``)."""
    return [
        (name, engine.create("ethics_policy", name, options, key=f"ethics[{i}]"))
        for i, (name, options) in enumerate(policy_specs(items))
    ]


def acts_at(policy, stage: str) -> bool:
    stages = getattr(policy, "stages", None)
    return stages is None or stage in stages


def apply(policies: list[tuple[str, Any]], text: str, stage: str) -> dict:
    """The combined decision of ``policies`` on ``text`` at ``stage``, with one entry per policy
    that acted in ``"policies"`` (``{"policy", "decision", "reasons", "spans"}``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    current, layers, results = text, [], []
    for name, policy in policies:
        if not acts_at(policy, stage):
            continue
        result = policy.inspect(current, stage)
        decision = result.get("decision", "allow")
        if decision not in _RANK:
            raise ValueError(f"ethics policy '{name}' returned unknown decision {decision!r}")
        spans = [{**span, "policy": name, **_to_original(layers, span["start"], span["end"])} for span in result.get("spans", ())]
        results.append({"policy": name, "decision": decision, "reasons": list(result.get("reasons", ())), "spans": spans})
        redacted = result.get("redacted", current)
        if decision == "redact" and redacted != current:
            layers.append(difflib.SequenceMatcher(None, current, redacted, autojunk=False).get_opcodes())
            current = redacted
    return {
        "decision": strictest(r["decision"] for r in results),
        "redacted": current,
        "reasons": [reason for r in results for reason in r["reasons"]],
        "spans": sorted((s for r in results for s in r["spans"]), key=lambda s: (s["start"], s["end"])),
        "policies": results,
    }


def _to_original(layers: list, start: int, end: int) -> dict:
    """Offsets in the text after ``layers`` of redaction, mapped back to the original text."""
    for opcodes in reversed(layers):
        start, end = _map(opcodes, start, False), _map(opcodes, end, True)
    return {"start": start, "end": end}


def _map(opcodes, position: int, is_end: bool) -> int:
    for tag, i1, i2, j1, j2 in opcodes:
        inside = j1 <= position < j2 if not is_end else j1 < position <= j2
        if inside or (tag == "equal" and position == j2):
            if tag == "equal":
                return i1 + position - j1
            return i2 if is_end else i1
    return opcodes[-1][2] if opcodes else position


class AuditLog:
    """An append-only JSONL record of every decision: time, stage, policy, decision, reasons, span
    types and the SHA-256 of the text. Never the text itself, nor what a policy matched in it."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: list[dict] = []

    def record(self, text: str, stage: str, result: dict, where: str | None = None) -> None:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for acted in result["policies"]:
            entry = {
                "time": now, "stage": stage, "policy": acted["policy"], "decision": acted["decision"],
                "reasons": acted["reasons"], "span_types": sorted({s.get("type", "") for s in acted["spans"]}), "text_sha256": digest,
            }
            if where:
                entry["where"] = where
            self.entries.append(entry)

    def flush(self, path: str | Path | None = None) -> None:
        """Append the buffered entries to the log file."""
        path = Path(path) if path else self.path
        if path is None or not self.entries:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in self.entries)
        self.entries = []


def filter_examples(policies, task, examples: list, audit: AuditLog | None = None, stage: str = "training_data") -> tuple[list, dict]:
    """(kept examples, report): a blocked example is dropped, a redacted one gets its texts
    replaced. The report counts, per policy, each decision and each reason."""
    report = {"examples": len(examples), "dropped": 0, "changed": 0, "flagged": 0, "policies": {name: {"block": 0, "redact": 0, "flag": 0, "reasons": {}} for name, _ in policies}}
    texts_of = getattr(task, "texts_of", None)
    if texts_of is None or (examples and texts_of(examples[0]) is None):
        report["skipped"] = f"task '{type(task).__name__}' exposes no texts (Task.texts_of): its examples were not inspected"
        return examples, report
    kept = []
    for example in examples:
        texts, changed, decisions = dict(texts_of(example)), {}, []
        for field, text in texts.items():
            result = apply(policies, text, stage)
            decisions.append(result["decision"])
            if audit is not None:
                audit.record(text, stage, result, where=getattr(example, "where", None))
            for acted in result["policies"]:
                counts = report["policies"][acted["policy"]]
                if acted["decision"] != "allow":
                    counts[acted["decision"]] += 1
                for reason in acted["reasons"]:
                    counts["reasons"][reason] = counts["reasons"].get(reason, 0) + 1
            if result["decision"] == "redact":
                changed[field] = result["redacted"]
        decision = strictest(decisions)
        if decision == "block":
            report["dropped"] += 1
            continue
        if changed:
            try:
                example = task.with_texts(example, changed)
            except NotImplementedError:  # e.g. NER: offsets point into the text; never train on it unredacted
                report["dropped"] += 1
                report["dropped_unredactable"] = report.get("dropped_unredactable", 0) + 1
                continue
            report["changed"] += 1
        elif decision == "flag":
            report["flagged"] += 1
        kept.append(example)
    return kept, report


def refusal(stage: str, result: dict) -> dict:
    """The record that stands in for a prediction a policy blocked."""
    return {"refused": True, "stage": stage, "decision": result["decision"], "reasons": result["reasons"]}


def guarded_predict(policies, task, examples: list, predict, audit: AuditLog | None = None) -> list[dict]:
    """``predict(examples) -> records`` with ``input`` policies on the examples' texts (a blocked
    input gets a refusal record, a redacted one is predicted redacted) and ``output`` policies on
    the string fields of the records."""
    records: list = [None] * len(examples)
    admitted = []
    for i, example in enumerate(examples):
        texts = task.texts_of(example) or {}
        changed, outcome = {}, None
        for field, text in texts.items():
            result = apply(policies, text, "input")
            if audit is not None:
                audit.record(text, "input", result, where=getattr(example, "where", None))
            if result["decision"] == "block":
                outcome = result
                break
            if result["decision"] == "redact":
                changed[field] = result["redacted"]
        if outcome is None and changed:
            try:
                example = task.with_texts(example, changed)
            except NotImplementedError:
                outcome = {"decision": "block", "reasons": ["the task cannot take a redacted input"]}
        if outcome is not None:
            records[i] = refusal("input", outcome)
        else:
            admitted.append((i, example))
    for (i, _), record in zip(admitted, predict([example for _, example in admitted]) if admitted else []):
        records[i] = _guard_output(policies, record, audit, getattr(examples[i], "where", None))
    return records


def _guard_output(policies, record: dict, audit: AuditLog | None, where: str | None) -> dict:
    if not any(acts_at(policy, "output") for _, policy in policies):
        return record
    record = dict(record)
    for key, value in list(record.items()):
        if not isinstance(value, str):
            continue
        result = apply(policies, value, "output")
        if audit is not None:
            audit.record(value, "output", result, where=where)
        if result["decision"] == "block":
            return refusal("output", result)
        if result["decision"] == "redact":
            record[key] = result["redacted"]
    return record


def items_from_cli(names: list[str], config_path: str | None = None, options: list[str] = ()) -> list:
    """An ``ethics:`` list from a YAML file's ``ethics:`` key, then ``--policy`` names, with
    ``--option POLICY.KEY=VALUE`` settings (values read as YAML) applied to the policy named."""
    import yaml

    from .config import read_yaml

    items = []
    if config_path:
        data = read_yaml(config_path)
        if "ethics" not in data:
            raise ConfigError(f"{config_path}: expected an 'ethics:' list of policies")
        items = data["ethics"]
    items = [{"name": name, **opts} for name, opts in [*policy_specs(items), *((name, {}) for name in names)]]
    for setting in options:
        key, sep, raw = setting.partition("=")
        policy, _, field = key.partition(".")
        targets = [item for item in items if item["name"] == policy]
        if not sep or not field or not targets:
            raise ConfigError(f"--option {setting!r}: expected POLICY.KEY=VALUE with POLICY one of {', '.join(i['name'] for i in items) or '(none given)'}")
        for item in targets:
            item[field] = yaml.safe_load(raw) if raw else ""
    return items


def guard_text(policies, text: str, stage: str, audit: AuditLog | None = None, where: str | None = None) -> tuple[str | None, dict]:
    """``(text to use, result)`` for one free text (a prompt, a question, a generated reply): the
    redacted text, or None when a policy blocks it (answer with :func:`refusal` instead)."""
    if not policies:
        return text, {"decision": "allow", "redacted": text, "reasons": [], "spans": [], "policies": []}
    result = apply(policies, text, stage)
    if audit is not None:
        audit.record(text, stage, result, where=where)
    return (None if result["decision"] == "block" else result["redacted"]), result
