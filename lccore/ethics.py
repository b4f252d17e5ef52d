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

import bisect
import datetime
import difflib
import hashlib
import inspect
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .config import policy_specs, resolve_paths
from .data import check_unicode
from .errors import ConfigError

STAGES = ("training_data", "input", "output")
DECISIONS = ("allow", "flag", "redact", "block")
_RANK = {name: i for i, name in enumerate(DECISIONS)}


def strictest(decisions: Iterable[str]) -> str:
    return max(decisions, key=_RANK.__getitem__, default="allow")


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
            opcodes = _opcodes(current, redacted, result.get("edits") or _edits_from_spans(current, redacted, result.get("spans", ())))
            layers.append((opcodes, [op[4] for op in opcodes]))
            current = redacted
    return {
        "decision": strictest(r["decision"] for r in results),
        "redacted": current,
        "reasons": [reason for r in results for reason in r["reasons"]],
        "spans": sorted((s for r in results for s in r["spans"]), key=lambda s: (s["start"], s["end"])),
        "policies": results,
    }


#: Longest stretch the kernel diffs character by character when a redacting policy's edits cannot
#: be known; a longer one is mapped as one replaced block (difflib is quadratic at worst).
MAX_DIFF_CHARS = 20_000


def _edits_from_spans(before: str, after: str, spans) -> list | None:
    """The edits of a policy that returned none, when ``after`` is ``before`` with each of its
    ``spans`` replaced: the text between the spans is found in ``after`` in order (linear)."""
    try:
        spans = sorted((int(span["start"]), int(span["end"])) for span in spans)
    except (KeyError, TypeError, ValueError):
        return None
    edits, position, last = [], 0, 0
    for index, (start, end) in enumerate(spans):
        if start < last or end < start:
            return None
        kept = before[last:start]
        if index == 0:
            if not after.startswith(kept):
                return None
            found = 0
        else:
            found = after.find(kept, position)
            if found < 0:
                return None
            edits[-1][2] = after[position:found]
        edits.append([start, end, None])
        position, last = found + len(kept), end
    tail = before[last:]
    if not edits or not after.endswith(tail) or len(after) - len(tail) < position:
        return None
    edits[-1][2] = after[position : len(after) - len(tail)]
    return edits


def _opcodes(before: str, after: str, edits=None) -> list[tuple]:
    """difflib-style opcodes from ``before`` to ``after``. From the policy's ``edits`` (``[start,
    end, replacement]`` in ``before``, sorted, not overlapping) when they rebuild ``after``: linear
    in the text. Else a diff of what lies between the common prefix and suffix, character by
    character up to :data:`MAX_DIFF_CHARS` and as one replaced block beyond (bounded time)."""
    if edits:
        opcodes, i, j = [], 0, 0
        for start, end, replacement in edits:
            if start < i or end < start or before[i:start] != after[j : j + start - i]:
                break
            if start > i:
                opcodes.append(("equal", i, start, j, j + start - i))
            j += start - i
            opcodes.append(("replace", start, end, j, j + len(replacement)))
            i, j = end, j + len(replacement)
        else:
            if before[i:] == after[j:]:
                if i < len(before):
                    opcodes.append(("equal", i, len(before), j, len(after)))
                return opcodes
    prefix = len(os.path.commonprefix([before, after]))
    suffix = len(os.path.commonprefix([before[prefix:][::-1], after[prefix:][::-1]]))
    old_middle, new_middle = before[prefix : len(before) - suffix], after[prefix : len(after) - suffix]
    if max(len(old_middle), len(new_middle)) <= MAX_DIFF_CHARS:
        middle = difflib.SequenceMatcher(None, old_middle, new_middle, autojunk=False).get_opcodes()
    else:
        middle = [("replace", 0, len(old_middle), 0, len(new_middle))]
    opcodes = [("equal", 0, prefix, 0, prefix)] if prefix else []
    opcodes += [(tag, i1 + prefix, i2 + prefix, j1 + prefix, j2 + prefix) for tag, i1, i2, j1, j2 in middle]
    if suffix:
        opcodes.append(("equal", len(before) - suffix, len(before), len(after) - suffix, len(after)))
    return opcodes


def _to_original(layers: list, start: int, end: int) -> dict:
    """Offsets in the text after ``layers`` of redaction, mapped back to the original text."""
    for opcodes, ends in reversed(layers):
        start, end = _map(opcodes, ends, start, False), _map(opcodes, ends, end, True)
    return {"start": start, "end": end}


def _map(opcodes, ends: list[int], position: int, is_end: bool) -> int:
    """``position`` in an opcode list's target text, in its source text. The blocks before the
    first one that reaches ``position`` (``ends``: each block's target end) are skipped by binary
    search, so a text with thousands of redactions maps each span in log time."""
    if not opcodes:
        return position
    for index in range(bisect.bisect_left(ends, position), len(opcodes)):
        tag, i1, i2, j1, j2 = opcodes[index]
        if j1 > position:
            break
        inside = j1 <= position < j2 if not is_end else j1 < position <= j2
        if inside or (tag == "equal" and position == j2):
            if tag == "equal":
                return i1 + position - j1
            return i2 if is_end else i1
    return opcodes[-1][2]


AUDIT_KEY_ENV = "LCCORE_AUDIT_KEY"
AUDIT_HASH_FIELD = "text_hmac_sha256"


def audit_key(log_path: str | Path) -> bytes:
    """The key of the audit log at ``log_path``: the UTF-8 bytes of ``$LCCORE_AUDIT_KEY`` (one
    secret for the whole deployment, 16 characters or more) or else of the key file
    ``<log>.key`` beside the log, made on first use with 64 random hex digits and readable by its
    owner only. The key never goes into the log: whoever reads the log without it cannot test
    candidate texts against the hashes."""
    import os

    secret = os.environ.get(AUDIT_KEY_ENV)
    source = AUDIT_KEY_ENV
    if secret is None:
        key_path = Path(f"{log_path}.key")
        source = str(key_path)
        try:
            if not key_path.exists():
                _create_key(key_path)
            secret = key_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key_path}: cannot read or create the audit log's key: {getattr(exc, 'strerror', None) or exc}") from None
    if len(secret) < 16:
        raise ConfigError(f"{source}: expected the audit log's secret key, 16 characters or more; got {len(secret)}")
    return secret.encode("utf-8")


def _create_key(key_path: Path) -> None:
    import os
    import secrets
    import tempfile

    key_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=key_path.parent, prefix=f".{key_path.name}.")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, key_path)  # whole or not at all, and never over a key another process made
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)


def audit_hmac(key: bytes, text: str) -> str:
    """``text_hmac_sha256`` of ``text`` under ``key``: HMAC-SHA256 of its UTF-8 bytes, in hex."""
    import hmac

    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


#: Entries an audit log with a file holds before it appends them to the file.
AUDIT_BUFFER = 4096


class AuditLog:
    """An append-only JSONL record of every decision: time, stage, policy, decision, reasons, span
    types and ``text_hmac_sha256``, a keyed hash of the text (:func:`audit_key`). Never the text
    itself, nor what a policy matched in it, nor an unkeyed hash of it (a short value such as a
    card number would be found again by hashing every candidate).

    A log with a ``path`` hashes each text as it is recorded and appends every :data:`AUDIT_BUFFER`
    entries, so that filtering a corpus of any size holds a bounded number of them; one without
    keeps its texts until :meth:`flush` names the file."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: list[dict] = []
        self._texts: list[str] = []  # without a path: hashed at flush, once the log (and so its key) is known
        self._key: bytes | None = None
        self._found: int | None = None  # the log file's size before this log first appended to it (-1: there was none)

    def record(self, text: str, stage: str, result: dict, where: str | None = None) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for acted in result["policies"]:
            entry = {
                "time": now, "stage": stage, "policy": acted["policy"], "decision": acted["decision"],
                "reasons": acted["reasons"], "span_types": sorted({s.get("type", "") for s in acted["spans"]}), AUDIT_HASH_FIELD: None,
            }
            if where:
                entry["where"] = where
            if self.path is not None:
                if self._key is None:
                    with _FLUSH_LOCK:  # two threads may make the key file at once
                        self._key = audit_key(self.path)
                entry[AUDIT_HASH_FIELD] = audit_hmac(self._key, text)
            else:
                self._texts.append(text)
            self.entries.append(entry)
        if self.path is not None and len(self.entries) >= AUDIT_BUFFER:
            self.flush()

    def flush(self, path: str | Path | None = None) -> None:
        """Append the buffered entries to the log file (one write per flush, so threads that
        share a log never interleave their lines); ``path`` only for a log made without one."""
        if path is not None and self.path is not None and Path(path) != self.path:
            raise ValueError(f"this audit log writes to {self.path}, not {path}")
        path = Path(path) if path else self.path
        if path is None or not self.entries:
            return
        with _FLUSH_LOCK:
            if self._texts:
                key = audit_key(path)
                for entry, text in zip(self.entries, self._texts):
                    entry[AUDIT_HASH_FIELD] = audit_hmac(key, text)
            lines = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in self.entries)
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._found is None and path == self.path:
                self._found = path.stat().st_size if path.exists() else -1
            with path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
        self.entries, self._texts = [], []

    def start_again(self) -> None:
        """Forget every entry this log recorded, those it appended to its file too (the file is cut
        back to what was there before, or removed if this log made it): a pass over the data
        that starts again records its decisions again."""
        self.entries, self._texts = [], []
        if self._found is not None and self.path.exists():
            if self._found < 0:
                self.path.unlink()
            else:
                os.truncate(self.path, self._found)
        self._found = None

    def move_to(self, path: str | Path) -> None:
        """The whole log, and its key file, moved to ``path`` (replacing a log there and its key):
        how a run's log written in a scratch folder becomes the run's."""
        self.flush()
        path = Path(path)
        for suffix in ("", ".key"):
            source, target = Path(f"{self.path}{suffix}"), Path(f"{path}{suffix}")
            target.unlink(missing_ok=True)
            if source.exists():
                shutil.move(source, target)  # a key keeps its owner-only mode (copy2 across file systems)
        self.path, self._key, self._found = path, None, None

    @staticmethod
    def verify(text: str, entry: dict, path: str | Path) -> bool:
        """Whether ``entry``, a line of the audit log at ``path``, was written for ``text``."""
        import hmac

        return hmac.compare_digest(str(entry.get(AUDIT_HASH_FIELD)), audit_hmac(audit_key(path), text))


_FLUSH_LOCK = threading.Lock()


def filter_examples(policies, task, examples: list, audit: AuditLog | None = None, stage: str = "training_data") -> tuple[list, dict]:
    """(kept examples, report): a blocked example is dropped, a redacted one gets its texts
    replaced. The report counts, per policy, each decision and each reason."""
    report = new_filter_report(policies)
    kept = list(filter_stream(policies, task, examples, report, audit, stage))
    return kept, report


def new_filter_report(policies) -> dict:
    return {"examples": 0, "dropped": 0, "changed": 0, "flagged": 0, "policies": {name: {"block": 0, "redact": 0, "flag": 0, "reasons": {}} for name, _ in policies}}


def filter_stream(policies, task, examples, report: dict | None = None, audit: AuditLog | None = None, stage: str = "training_data"):
    """The examples of an iterable that ``policies`` keep (redacted where they say so), one at a
    time, so a corpus of any size streams through; ``report`` (:func:`new_filter_report`) counts
    the decisions as they are made."""
    report = new_filter_report(policies) if report is None else report
    texts_of = getattr(task, "texts_of", None)
    for example in examples:
        report["examples"] += 1
        texts = texts_of(example) if texts_of is not None else None
        if texts is None:  # the task exposes no texts: nothing to inspect
            report["skipped"] = f"task '{type(task).__name__}' exposes no texts (Task.texts_of): its examples were not inspected"
            yield example
            continue
        texts, changed, decisions = dict(texts), {}, []
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
        yield example


def refusal(stage: str, result: dict) -> dict:
    """The record that stands in for a prediction a policy blocked."""
    return {"refused": True, "stage": stage, "decision": result["decision"], "reasons": result["reasons"]}


def guarded_predict(policies, task, examples: list, predict, audit: AuditLog | None = None) -> list[dict]:
    """``predict(examples) -> records`` with ``input`` policies on the examples' texts (a blocked
    input gets a refusal record, a redacted one is predicted redacted) and ``output`` policies on
    the string fields of the records."""
    records: list = [None] * len(examples)
    admitted, redacted = [], {}
    for i, example in enumerate(examples):
        texts = task.texts_of(example) or {}
        changed, outcome, reasons = {}, None, []
        for field, text in texts.items():
            result = apply(policies, text, "input")
            if audit is not None:
                audit.record(text, "input", result, where=getattr(example, "where", None))
            if result["decision"] == "block":
                outcome = result
                break
            if result["decision"] == "redact":
                changed[field] = result["redacted"]
                reasons += result["reasons"]
        if outcome is None and changed:
            try:
                example = task.with_texts(example, changed)
                redacted[i] = list(dict.fromkeys(reasons))
            except NotImplementedError:
                outcome = {"decision": "block", "reasons": ["the task cannot take a redacted input"]}
        if outcome is not None:
            records[i] = refusal("input", outcome)
        else:
            admitted.append((i, example))
    for (i, _), record in zip(admitted, predict([example for _, example in admitted]) if admitted else []):
        if i in redacted:  # the prediction is of the redacted text: the row says so, and why
            record = {**record, "redacted_input": redacted[i]}
        records[i] = _guard_output(policies, record, audit, getattr(examples[i], "where", None))
    return records


def _guard_output(policies, record: dict, audit: AuditLog | None, where: str | None) -> dict:
    if not any(acts_at(policy, "output") for _, policy in policies):
        return record
    record, reasons = dict(record), []
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
            reasons += result["reasons"]
    if reasons:
        record["redacted_output"] = list(dict.fromkeys(reasons))
    return record


def items_from_cli(names: list[str], config_path: str | None = None, options: list[str] = ()) -> list:
    """An ``ethics:`` list from a YAML file's ``ethics:`` key, then ``--policy`` names, with
    ``--option POLICY.KEY=VALUE`` settings (values read as YAML) applied to the policy named."""
    from .typed import read_yaml, safe_load_yaml

    items = []
    if config_path:
        data = read_yaml(config_path)
        if "ethics" not in data:
            raise ConfigError(f"{config_path}: expected an 'ethics:' list of policies")
        items = resolve_paths(data["ethics"], Path(config_path).resolve().parent)
    items = [{"name": name, **opts} for name, opts in [*policy_specs(items), *((name, {}) for name in names)]]
    for setting in options:
        key, sep, raw = setting.partition("=")
        policy, _, field = key.partition(".")
        targets = [item for item in items if item["name"] == policy]
        if not sep or not field or not targets:
            raise ConfigError(f"--option {setting!r}: expected POLICY.KEY=VALUE with POLICY one of {', '.join(i['name'] for i in items) or '(none given)'}")
        for item in targets:
            item[field] = safe_load_yaml(raw, f"--option {key}") if raw else ""
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


class Guard:
    """Ethics policies with their audit log: what :func:`lccore.load` gives a predictor (the run's
    ``ethics:`` list), and what ``lccore predict``, ``generate``, ``kg ask`` and ``serve`` apply.

    - :meth:`predict` guards a task's predictions (a blocked input gets a refusal record);
    - :meth:`answer` / :meth:`answer_batch` / :meth:`stream` guard a reasoner (or any function
      from a query to a result): input policies on a text query, output policies on the string
      fields of the result;
    - :meth:`wrap` gives a reasoner whose ``answer``, ``answer_batch`` and ``stream`` are guarded.

    Every decision is appended to ``audit_log`` when one is given (hashes, never the text).
    A guard with no policies passes everything through untouched."""

    def __init__(self, policies: list[tuple[str, Any]] = (), audit_log: str | Path | None = None):
        self.policies = list(policies)
        self.audit_log = Path(audit_log) if audit_log else None

    @classmethod
    def build(cls, items: list, *, engine=None, audit_log: str | Path | None = None) -> "Guard":
        """A guard from an ``ethics:`` list (``["pii", {"name": "toxicity", "threshold": 0.8}]``)."""
        if not items:
            return cls((), audit_log)
        if engine is None:
            from .plugins import Engine

            engine = Engine()
        return cls(build_policies(engine, list(items)), audit_log)

    def __bool__(self) -> bool:
        return bool(self.policies)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.policies]

    def _log(self) -> AuditLog:
        return AuditLog(self.audit_log)

    def check(self, text: str, stage: str, where: str | None = None) -> tuple[str | None, dict]:
        """``(text to use, combined decision)``: the redacted text, or None when it is blocked."""
        audit = self._log()
        try:
            return guard_text(self.policies, text, stage, audit, where)
        finally:
            audit.flush()

    def predict(self, task, examples: list, predict: Callable[[list], list[dict]]) -> list[dict]:
        """``predict(examples)`` behind the input and output policies: see :func:`guarded_predict`."""
        if not self.policies:
            return predict(examples) if examples else []
        audit = self._log()
        try:
            return guarded_predict(self.policies, task, examples, predict, audit)
        finally:
            audit.flush()

    def answer(self, query: Any, answer: Callable[[Any], dict], where: str | None = None) -> dict:
        """``answer(query)`` with input policies on a text query (a blocked one is never
        answered: a refusal record comes back) and output policies on the result's strings."""
        return self.answer_batch([query], lambda queries, wheres: [answer(q) for q in queries], [where] if where else None)[0]

    def answer_batch(self, queries: list, answer_batch: Callable[[list, list[str]], list[dict]], wheres: list[str] | None = None) -> list[dict]:
        """Like :meth:`answer` for many queries, answered by one ``answer_batch(admitted, wheres)``
        call (``wheres``: where each query came from, for error messages)."""
        wheres = wheres or [f"input {i + 1}" for i in range(len(queries))]
        if not self.policies:
            return answer_batch(list(queries), list(wheres)) if queries else []
        audit = self._log()
        try:
            results: list = [None] * len(queries)
            admitted = []
            for i, query in enumerate(queries):
                query, verdict = _guard_query(self.policies, query, audit, wheres[i])
                if query is None:
                    results[i] = refusal("input", verdict)
                    continue
                admitted.append((i, query))
            answers = answer_batch([query for _, query in admitted], [wheres[i] for i, _ in admitted]) if admitted else []
            for (i, _), result in zip(admitted, answers):
                results[i] = _guard_output(self.policies, result, audit, wheres[i])
            return results
        finally:
            audit.flush()

    def stream(self, query: Any, stream: Callable[[Any], Iterable[str]], where: str | None = None) -> Iterator[str | dict]:
        """The pieces of ``stream(query)`` behind the policies. Output policies need text to judge,
        so the pieces are held back until a sentence or line ends and each sentence is checked on
        its own, then shown (redacted where a policy says so). When a policy blocks the query or
        a sentence, a refusal record (a dict) is the last item and nothing more is generated."""
        if self.policies:
            audit = self._log()
            try:
                query, verdict = _guard_query(self.policies, query, audit, where)
            finally:
                audit.flush()
            if query is None:
                yield refusal("input", verdict)
                return
        pieces = iter(stream(query))
        try:
            if not any(acts_at(policy, "output") for _, policy in self.policies):
                yield from pieces
                return
            held = ""
            while True:
                piece = next(pieces, None)
                held += piece or ""
                cut = len(held) if piece is None else _sentence_end(held)
                if cut:
                    text, verdict = self.check(held[:cut], "output", where)
                    if text is None:  # nothing after a blocked sentence is shown, or made (finally)
                        yield refusal("output", verdict)
                        return
                    held = held[cut:]
                    if text:
                        yield text
                if piece is None:
                    return
        finally:  # blocked, finished, or the reader went away: the source stops generating
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    def wrap(self, reasoner, **bound) -> "GuardedReasoner":
        """``reasoner`` with its ``answer``, ``answer_batch`` and ``stream`` behind this guard;
        ``bound`` keyword arguments (``predictor=…``, ``graph=…``) are passed to every call."""
        return GuardedReasoner(reasoner, self, bound)


def _guard_query(policies, query: Any, audit: AuditLog, where: str | None) -> tuple[Any, dict]:
    """``(query to answer, decision)`` with the input policies on every text in ``query``: a
    string, or the strings inside an object such as ``{"messages": [{"role", "content"}]}``
    (``role`` values are names, not texts). None when a policy blocks any of them."""
    verdicts = []

    def walk(value, key=None):
        if isinstance(value, str) and key != "role":
            text, verdict = guard_text(policies, value, "input", audit, where)
            verdicts.append(verdict)
            return text
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        return value

    guarded = walk(query)
    blocked = [v for v in verdicts if v["decision"] == "block"]
    if blocked:
        return None, {"decision": "block", "reasons": [r for v in blocked for r in v["reasons"]]}
    return guarded, {"decision": strictest(v["decision"] for v in verdicts)}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_MAX_HELD = 1000  # characters: a text with no sentence end is still shown, cut at a space


def _sentence_end(text: str) -> int:
    """Where the last complete sentence (or line) of ``text`` ends, or 0."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    if ends:
        return ends[-1]
    if len(text) > _MAX_HELD:
        return text.rfind(" ", 0, len(text)) + 1
    return 0


class GuardedReasoner:
    """A reasoner behind a :class:`Guard` (see :meth:`Guard.wrap`)."""

    def __init__(self, reasoner, guard: Guard, bound: dict):
        self.reasoner, self.guard, self.bound = reasoner, guard, bound

    def answer(self, query: Any, **kwargs) -> dict:
        check_unicode(query, "query")
        return self.guard.answer(query, lambda q: self.reasoner.answer(q, **self.bound, **kwargs))

    def answer_batch(self, queries: list, *, wheres: list[str] | None = None, **kwargs) -> list[dict]:
        batch = getattr(self.reasoner, "answer_batch", None)
        if batch is None:
            call = lambda qs, ws: [self.reasoner.answer(q, **self.bound, **kwargs) for q in qs]  # noqa: E731
        elif "wheres" in inspect.signature(batch).parameters:
            call = lambda qs, ws: batch(qs, **self.bound, wheres=ws, **kwargs)  # noqa: E731
        else:
            call = lambda qs, ws: batch(qs, **self.bound, **kwargs)  # noqa: E731
        for i, query in enumerate(queries):
            check_unicode(query, wheres[i] if wheres else f"query {i + 1}")
        return self.guard.answer_batch(queries, call, wheres)

    def stream(self, query: Any, **kwargs) -> Iterator[str | dict]:
        if not hasattr(self.reasoner, "stream"):
            raise TypeError(f"{type(self.reasoner).__name__} does not stream its answers")
        check_unicode(query, "query")
        return self.guard.stream(query, lambda q: self.reasoner.stream(q, **self.bound, **kwargs))
