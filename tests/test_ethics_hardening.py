"""Ethics policies against a hostile writer: PII hidden by invisible or fullwidth characters and
unusual separators is still redacted, look-alikes are not, no pattern can be made to backtrack or
rescan for long, and the audit log's hash cannot be reversed by trying candidates."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lccore
from lccore import ethics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine():
    return lccore.Engine(use_env=False)


def apply(engine, text, *items):
    return ethics.apply(ethics.build_policies(engine, list(items or ["pii"])), text, "input")


# (text with PII hidden in it, the PII as written, its type)
EVASIONS = [
    ("4111\u200b1111\u200b1111\u200b1111", "CREDIT_CARD"),  # zero-width space
    ("5500\u20600000\u20600000\u20600004", "CREDIT_CARD"),  # word joiner
    ("3782\u00ad822463\u00ad10005", "CREDIT_CARD"),  # soft hyphen
    ("6011\ufeff1111\u200e1111\u20631117", "CREDIT_CARD"),  # BOM, left-to-right mark, invisible separator: all category Cf
    ("\uff14\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11", "CREDIT_CARD"),  # fullwidth digits, ideographic spaces
    ("4111 - 1111 - 1111 - 1111", "CREDIT_CARD"),
    ("4111 \u2013 1111 \u2013 1111 \u2013 1111", "CREDIT_CARD"),  # en dashes
    ("j\u200bane.doe@exa\u200bmple.com", "EMAIL"),
    ("bob\u00adby@mail\u2060.example.org", "EMAIL"),
    ("jane\uff20example.com", "EMAIL"),  # fullwidth commercial at
    ("\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a", "EMAIL"),  # 用户@例子.广告
    ("j\u00f6ran@b\u00fccher.de", "EMAIL"),
    ("jo\u0308ran@bu\u0308cher.de", "EMAIL"),  # the same, decomposed
    ("Jane_O'Neil@example.com", "EMAIL"),
    ("+44\u200b20\u200b7946\u200b0958", "PHONE"),
    ("DE89\u200b3704\u200b0044\u200b0532\u200b0130\u200b00", "IBAN"),
    ("\uff11\uff19\uff12\uff0e\uff11\uff16\uff18\uff0e\uff11\uff0e\uff11\uff10", "IP_ADDRESS"),  # fullwidth 192.168.1.10
]


@pytest.mark.parametrize("value, kind", EVASIONS, ids=[f"{kind}-{i}" for i, (_, kind) in enumerate(EVASIONS)])
def test_hidden_pii_is_redacted_over_its_whole_original_span(engine, value, kind):
    text = f"write to {value} today"
    result = apply(engine, text)
    # The placeholder replaces every original character of the value, invisible ones included.
    assert result["redacted"] == f"write to <{kind}> today"
    assert result["spans"] == [{"start": 9, "end": 9 + len(value), "type": kind, "policy": "pii"}]


def test_hidden_pii_leaves_no_piece_behind(engine):
    card = "\uff14\uff11\uff11\uff11\u200b\uff11\uff11\uff11\uff11 1111 - 1111"
    mail = "Jane_O'Neil@exa\u200bmple.com"
    redacted = apply(engine, f"card {card}, mail {mail}.")["redacted"]
    assert not re.search(r"\d", redacted) and not re.search(r"[\uff10-\uff19]", redacted)
    assert "Jane" not in redacted and "Neil" not in redacted and "mple" not in redacted and "\u200b" not in redacted


def test_invisible_characters_do_not_hide_profanity(engine):
    for text in ["f\u200bu\u200bc\u200bk off", "sh\u00adit happens", "\uff53\uff48\uff49\uff54"]:
        assert apply(engine, text, "toxicity")["decision"] == "block", text
    result = apply(engine, "well f\u200bu\u2060ck that", {"name": "toxicity", "action": "redact"})
    assert result["redacted"] == "well <PROFANITY> that"


# (look-alike without PII, the same kind of number where it is PII)
LOOK_ALIKES = [
    ("Upgrade to version 1.2.3.4 today.", "Connect to 1.2.3.4 today."),
    ("Depends on lib 1.2.3.4-beta.", "Depends on host 1.2.3.4 now."),
    ("Order #123-456-7890 has shipped.", "Call 123-456-7890 when shipped."),
    ("Order no. 0123 456 789 was cancelled.", "Ring 0123 456 789 if cancelled."),
    ("Invoice 020 7946 0958 is due.", "Phone 020 7946 0958 if due."),
    ("Tracking number: 555.123.4567", "Mobile: 555.123.4567"),
]


@pytest.mark.parametrize("look_alike, real", LOOK_ALIKES)
def test_look_alikes_are_not_pii_by_their_context(engine, look_alike, real):
    assert apply(engine, look_alike)["decision"] == "allow"
    assert apply(engine, real)["decision"] == "redact"


def test_recall_and_precision_on_the_labelled_evasions():
    from lccore_ethics.pii import find_pii, score

    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "data" / "pii_evasions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(bool(r["spans"]) for r in rows) >= 40 and sum(not r["spans"] for r in rows) >= 30
    for kind, counts in score(rows).items():
        assert counts["recall"] >= 0.95 and counts["precision"] >= 0.95, (kind, counts)
    false_positives = [r["text"] for r in rows if not r["spans"] and find_pii(r["text"])]
    assert false_positives == []


def _unbounded_repeats(tree) -> list:
    """The repeats with no upper bound in a parsed regular expression."""
    try:
        from re import _constants as constants, _parser as parser  # Python 3.11+
    except ImportError:  # pragma: no cover
        import sre_constants as constants
        import sre_parse as parser
    found = []
    for op, args in tree:
        if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None)):
            low, high, body = args
            if high == constants.MAXREPEAT:
                found.append(str(body))
            found += _unbounded_repeats(body)
        elif op == constants.SUBPATTERN:
            found += _unbounded_repeats(args[-1])
        elif op == constants.BRANCH:
            for branch in args[1]:
                found += _unbounded_repeats(branch)
        elif op in (constants.ASSERT, constants.ASSERT_NOT):
            found += _unbounded_repeats(args[1])
        elif isinstance(args, parser.SubPattern):
            found += _unbounded_repeats(args)
    return found


def test_every_pii_pattern_reads_a_bounded_stretch_of_text():
    """With every repeat bounded, one match attempt reads at most a fixed number of characters,
    so a scan is linear in the text however it is crafted ('a%' * 40000 took 7.6 s)."""
    try:
        from re import _parser as parser
    except ImportError:  # pragma: no cover
        import sre_parse as parser
    from lccore_ethics import pii

    patterns = {name: value for name, value in vars(pii).items() if isinstance(value, re.Pattern)}
    assert {"EMAIL", "CREDIT_CARD", "PHONE", "IBAN", "IPV4", "IPV6"} <= set(patterns)
    for name, pattern in patterns.items():
        assert _unbounded_repeats(parser.parse(pattern.pattern, pattern.flags)) == [], name


HANG_CASES = {
    "pii": ["'a%' * 250_000", "'a' * 500_000 + '@'", "'a@' + 'b.' * 250_000", "'1 ' * 250_000", "'1 - ' * 125_000", "'\\u200b4' * 250_000", "'\\uff14' * 500_000", "'o\\u0308' * 250_000"],
    "toxicity": ["'shit ' * 100_000", "'f.u.c.k ' * 60_000", "'f*' * 250_000", "'f\\u200bu\\u200bc\\u200bk ' * 50_000",
                 "'you stupid ' * 100_000", "'gay people are all just ' * 50_000", "'i will ' * 100_000 + 'kill you'", "'.' * 500_000"],
}


@pytest.mark.parametrize("policy", sorted(HANG_CASES))
def test_crafted_long_inputs_do_not_hang_a_policy(policy):
    """A hang guard, not a speed goal: inputs of half a megabyte crafted to make a pattern
    backtrack or a policy rescan ('a%' repeated, a listed word repeated: minutes each before)
    must all finish well inside a generous bound on a busy machine."""
    code = (
        "import lccore; from lccore import ethics\n"
        f"policies = ethics.build_policies(lccore.Engine(use_env=False), [{policy!r}])\n"
        f"for text in [{', '.join(HANG_CASES[policy])}]:\n"
        "    print(ethics.apply(policies, text, 'input')['decision'], flush=True)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{policy}: still running after 120 s; finished {len((exc.stdout or b'').splitlines())} of {len(HANG_CASES[policy])} inputs")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == len(HANG_CASES[policy])


def _audit(tmp_path, engine, texts, **env):
    log = tmp_path / "logs" / "audit.jsonl"
    guard = ethics.Guard(ethics.build_policies(engine, ["pii"]), audit_log=log)
    for text in texts:
        guard.check(text, "input")
    return log, [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_the_audit_log_holds_a_keyed_hash_that_verifies_only_with_its_key(tmp_path, engine, monkeypatch):
    monkeypatch.delenv("LCCORE_AUDIT_KEY", raising=False)
    texts = ["card 4111 1111 1111 1111", "PIN 1234"]
    log, entries = _audit(tmp_path, engine, texts)
    content = log.read_text(encoding="utf-8")
    for text in texts:  # no unkeyed hash of a text, which anyone could recompute from a guess
        assert hashlib.sha256(text.encode()).hexdigest() not in content
    assert all("text_sha256" not in e and re.fullmatch(r"[0-9a-f]{64}", e["text_hmac_sha256"]) for e in entries)
    key_file = Path(f"{log}.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text(encoding="utf-8").strip()
    assert len(key) >= 32 and key not in content
    # The recipe of docs/ethics.md: HMAC-SHA256 of the text's UTF-8 under the key's UTF-8.
    assert entries[0]["text_hmac_sha256"] == hmac.new(key.encode(), texts[0].encode(), hashlib.sha256).hexdigest()
    assert ethics.AuditLog.verify(texts[1], entries[1], log)
    assert not ethics.AuditLog.verify("PIN 1235", entries[1], log)
    monkeypatch.setenv("LCCORE_AUDIT_KEY", "another deployment's key")
    assert not ethics.AuditLog.verify(texts[1], entries[1], log)  # a wrong key does not verify


def test_the_audit_key_comes_from_the_environment_and_is_kept_once_made(tmp_path, engine, monkeypatch):
    monkeypatch.delenv("LCCORE_AUDIT_KEY", raising=False)
    log, first = _audit(tmp_path, engine, ["mail a@example.com"])
    log, second = _audit(tmp_path, engine, ["mail a@example.com"])
    assert first[0]["text_hmac_sha256"] == second[-1]["text_hmac_sha256"]  # the key file is made once
    monkeypatch.setenv("LCCORE_AUDIT_KEY", "s3cret for this deployment")
    other = tmp_path / "other"
    log, entries = _audit(other, engine, ["mail a@example.com"])
    assert not Path(f"{log}.key").exists()
    assert entries[0]["text_hmac_sha256"] == hmac.new(b"s3cret for this deployment", b"mail a@example.com", hashlib.sha256).hexdigest()
    monkeypatch.setenv("LCCORE_AUDIT_KEY", "short")
    with pytest.raises(lccore.ConfigError, match=r"LCCORE_AUDIT_KEY: expected .*16 characters"):
        _audit(tmp_path / "third", engine, ["x"])


class NoEditsBlocklist:
    """A third-party redacting policy that returns no ``edits``: the kernel diffs instead."""

    def inspect(self, text, stage):
        spans = [{"start": m.start(), "end": m.end(), "type": "WORD"} for m in re.finditer(r"\bsecret\b", text)]
        return {"decision": "redact" if spans else "allow", "redacted": re.sub(r"\bsecret\b", "<X>", text), "reasons": ["word"], "spans": spans}


@pytest.mark.parametrize("with_edits", [True, False])
def test_spans_after_many_redactions_map_back_to_the_original_text(engine, with_edits):
    text = " ".join(f"mail jane{i}@example.com about the secret shit, {i}" for i in range(2000))
    policies = ethics.build_policies(engine, ["pii", {"name": "toxicity", "action": "redact"}])
    policies.append(("words", NoEditsBlocklist()) if not with_edits else ethics.build_policies(engine, [{"name": "blocklist", "terms": ["secret"], "action": "redact"}])[0])
    result = ethics.apply(policies, text, "input")
    assert "secret" not in result["redacted"] and "@" not in result["redacted"] and "shit" not in result["redacted"]
    found = [text[s["start"] : s["end"]] for s in result["spans"]]
    assert len(found) == 3 * 2000
    assert {value for value, span in zip(found, result["spans"]) if span["type"] != "EMAIL"} == {"secret", "shit"}
    assert all(value == f"jane{i}@example.com" for i, value in enumerate(v for v, s in zip(found, result["spans"]) if s["type"] == "EMAIL"))


@pytest.mark.parametrize("number", ["455", "717", "5318008", "1337", "80085"])
def test_a_plain_number_is_not_leetspeak(engine, number):
    assert apply(engine, f"order {number} ships on monday, total {number}", "toxicity")["decision"] == "allow"


def test_an_audit_log_with_a_file_appends_as_it_goes_and_keeps_no_text(tmp_path, engine, monkeypatch):
    """Filtering a corpus of any size holds a bounded number of entries, and never the texts."""
    monkeypatch.delenv("LCCORE_AUDIT_KEY", raising=False)
    monkeypatch.setattr(ethics, "AUDIT_BUFFER", 4)
    policies = ethics.build_policies(engine, ["pii"])
    log = tmp_path / "audit.jsonl"
    audit = ethics.AuditLog(log)
    texts = [f"row {i} mail a{i}@example.com" for i in range(10)]
    for text in texts:
        audit.record(text, "training_data", ethics.apply(policies, text, "training_data"))
        assert len(audit.entries) < 4 and not audit._texts
    assert len(log.read_text(encoding="utf-8").splitlines()) == 8  # two appends of four, before any flush
    audit.flush()
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [ethics.AuditLog.verify(text, entry, log) for text, entry in zip(texts, entries)] == [True] * 10
    # starting again takes back only what this log appended: a log that was there stays as it was
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"earlier": "entry"}\n', encoding="utf-8")
    again = ethics.AuditLog(mine)
    for text in texts:
        again.record(text, "training_data", ethics.apply(policies, text, "training_data"))
    assert len(mine.read_text(encoding="utf-8").splitlines()) == 1 + 8
    again.start_again()
    assert mine.read_text(encoding="utf-8") == '{"earlier": "entry"}\n' and not again.entries
    fresh = ethics.AuditLog(tmp_path / "fresh.jsonl")
    for text in texts:
        fresh.record(text, "training_data", ethics.apply(policies, text, "training_data"))
    fresh.start_again()
    assert not (tmp_path / "fresh.jsonl").exists()  # made by this log: removed
    moved = tmp_path / "run" / "audit.jsonl"
    moved.parent.mkdir()
    audit.move_to(moved)  # with its key: the entries still verify there
    assert not log.exists() and not Path(f"{log}.key").exists()
    assert ethics.AuditLog.verify(texts[3], entries[3], moved)
