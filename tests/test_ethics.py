"""Ethics policies: PII, toxicity and blocklist decisions, their composition, the audit log, and
where they act (training data, `lccore predict`, `lccore ethics check`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import lccore
from lccore import ethics
from lccore.cli import main

ROOT = Path(__file__).resolve().parents[1]
PII_SAMPLES = {
    "EMAIL": "jane.doe@example.co.uk",
    "PHONE": "+44 20 7946 0958",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "192.168.1.10",
}


@pytest.fixture(scope="module")
def engine():
    return lccore.Engine(use_env=False)


def policies(engine, *items):
    return ethics.build_policies(engine, list(items))


@pytest.mark.parametrize("kind", sorted(PII_SAMPLES))
def test_pii_redacts_each_type_with_a_typed_placeholder(engine, kind):
    value = PII_SAMPLES[kind]
    text = f"Reach me via {value} today."
    result = ethics.apply(policies(engine, "pii"), text, "input")
    assert result["decision"] == "redact"
    assert result["redacted"] == f"Reach me via <{kind}> today."
    assert result["spans"] == [{"start": 13, "end": 13 + len(value), "type": kind, "policy": "pii"}]


def test_pii_checksums_and_look_alikes_pass(engine):
    pii = policies(engine, "pii")
    for text in ["card 4111 1111 1111 1112", "IBAN DE00 3704 0044 0532 0130 00", "on 01.02.2024 at 10:30:00", "version 1.2.3", "costs $1,299.99"]:
        assert ethics.apply(pii, text, "input")["decision"] == "allow", text


def test_pii_action_and_types_options(engine):
    text = "mail a@example.com from 10.0.0.1"
    blocked = ethics.apply(policies(engine, {"name": "pii", "action": "block", "types": ["IP_ADDRESS"]}), text, "input")
    assert blocked["decision"] == "block" and blocked["reasons"] == ["pii: IP_ADDRESS"] and blocked["redacted"] == text
    with pytest.raises(lccore.ConfigError, match=r"ethics\[0\]\.types\[0\]: expected one of"):
        policies(engine, {"name": "pii", "types": ["SSN"]})


def test_pii_recall_and_precision_on_the_labelled_file():
    from lccore_ethics.pii import score

    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "data" / "pii_labelled.jsonl").read_text().splitlines()]
    assert len(rows) >= 100
    result = score(rows)
    for kind in PII_SAMPLES:
        assert result[kind]["recall"] >= 0.9, (kind, result[kind])
        assert result[kind]["precision"] >= 0.95, (kind, result[kind])


@pytest.mark.parametrize("text", ["what the f*ck", "f.u.c.k you", "fuuuuck", "sh1t happens", "$hit", "you a55hole", "SHIT"])
def test_toxicity_sees_through_obfuscation(engine, text):
    assert ethics.apply(policies(engine, "toxicity"), text, "input")["decision"] == "block"


@pytest.mark.parametrize("text", ["a class assessment in Scunthorpe", "assess the bass", "as is", "grass and glasses", "Hello, I am fine."])
def test_toxicity_has_no_scunthorpe_false_positives(engine, text):
    assert ethics.apply(policies(engine, "toxicity"), text, "input")["decision"] == "allow"


NEUTRAL_IDENTITY = ["A {} couple leads this charming comedy.", "a {} film festival", "My neighbour is {} and we often cook together.", "{} people live in this town."]
HOSTILE_IDENTITY = ["I hate {} people.", "{} people are vermin.", "All {} people should die.", "Those filthy {} people ruin everything.", "Kill all the {} people."]


def test_toxicity_judges_identity_terms_in_context_whichever_group(engine):
    """Issue 18: identity terms are not profanity. Neutral sentences pass and hostile ones are
    blocked, and swapping the identity term (orientation, religion, race, nationality from the
    audit's own term file) never changes the decision."""
    from lccore_ethics.audit import load_terms

    toxicity = policies(engine, "toxicity")
    nationalities = [terms[0] for terms in load_terms()["nationality"].values()]
    terms = ["gay", "queer", "lesbian", "straight", "Muslim", "Christian", "Jewish", "Black", "white", "trans", "disabled"] + nationalities
    for template in NEUTRAL_IDENTITY:
        decisions = {term: ethics.apply(toxicity, template.format(term), "input")["decision"] for term in terms}
        assert set(decisions.values()) == {"allow"}, (template, decisions)
    for template in HOSTILE_IDENTITY:
        decisions = {term: ethics.apply(toxicity, template.format(term), "input")["decision"] for term in terms}
        assert set(decisions.values()) == {"block"}, (template, decisions)
    # the word list alone (context: false, better-profanity's decision) is what blocked the neutral ones
    assert ethics.apply(policies(engine, {"name": "toxicity", "context": False}), "A gay couple leads this charming comedy.", "input")["decision"] == "block"


@pytest.mark.parametrize(
    ("text", "decision", "reason"),
    [
        ("You stupid idiot, read the manual.", "block", "toxicity: insult aimed at someone"),
        ("you're such a m0ron", "block", "toxicity: insult aimed at someone"),
        ("The plot is stupid but the actors are charming.", "allow", None),
        ("Did you see how stupid the ending was?", "allow", None),
        ("I'll kill you if you come back.", "block", "toxicity: threat"),
        ("Go kill yourself.", "block", "toxicity: threat"),
        ("The twist will kill you.", "allow", None),
        ("I need to kill some time before the train.", "allow", None),
        ("Refugees were killed in the attack.", "allow", None),
        ("Refugees should be killed.", "block", "toxicity: hostile to a group"),
        ("Moby Dick, Woody Allen and Professor Wang", "allow", None),
        ("The rapist was sentenced; the Nazi regime murdered millions; breast cancer screening saves lives.", "allow", None),
        ("He graduated summa cum laude and paid A$5.44 for the AAAS report.", "allow", None),
    ],
)
def test_toxicity_context_rules(engine, text, decision, reason):
    result = ethics.apply(policies(engine, "toxicity"), text, "input")
    assert result["decision"] == decision, result
    assert result["reasons"] == ([reason] if reason else [])


def test_toxicity_context_spans_are_at_the_offsets_of_the_original_text(engine):
    text = "A long first clause about the weather. Then: \u00bdthose filthy immigrants, said nobody."
    result = ethics.apply(policies(engine, {"name": "toxicity", "action": "redact"}), text, "input")
    (span,) = result["spans"]
    assert text[span["start"] : span["end"]] == "filthy immigrants"
    assert result["redacted"] == text.replace("filthy immigrants", "<PROFANITY>")


def test_toxicity_redacts_and_takes_extra_and_allowed_words(engine):
    redact = policies(engine, {"name": "toxicity", "action": "redact", "extra_words": ["grumble"], "allow_words": ["hell"]})
    result = ethics.apply(redact, "grumble, shit and hell", "output")
    assert result["redacted"] == "<PROFANITY>, <PROFANITY> and hell"


def test_blocklist_terms_patterns_and_bad_pattern(engine):
    blocklist = policies(engine, {"name": "blocklist", "terms": ["Project X"], "patterns": [r"secret-\d+"], "action": "redact"})
    result = ethics.apply(blocklist, "about project  x and SECRET-42, not projects xylo", "input")
    assert result["redacted"] == "about <BLOCKED> and <BLOCKED>, not projects xylo"
    case = policies(engine, {"name": "blocklist", "terms": ["Acme"], "case_sensitive": True})
    assert ethics.apply(case, "acme", "input")["decision"] == "allow"
    with pytest.raises(lccore.ConfigError, match=r"patterns\[1\]: invalid regular expression '\(bad'"):
        policies(engine, {"name": "blocklist", "patterns": ["ok", "(bad"]})


def test_composition_strictest_wins_and_offsets_refer_to_the_original(engine):
    chain = policies(engine, "pii", {"name": "blocklist", "terms": ["zebra"], "action": "flag"})
    text = "mail a@example.com about the zebra"
    result = ethics.apply(chain, text, "input")
    assert result["decision"] == "redact"  # redact beats flag
    flagged = next(s for s in result["spans"] if s["policy"] == "blocklist")
    assert text[flagged["start"] : flagged["end"]] == "zebra"  # found in the redacted text, reported in the original
    chain = policies(engine, "pii", {"name": "blocklist", "terms": ["zebra"]})
    assert ethics.apply(chain, text, "input")["decision"] == "block"
    only_input = policies(engine, {"name": "blocklist", "terms": ["zebra"], "stages": ["input"]})
    assert ethics.apply(only_input, text, "output")["decision"] == "allow"


def test_cli_check_writes_one_row_per_input_and_an_audit_log_without_raw_pii(tmp_path, capsys):
    rows = [f"my card is {PII_SAMPLES['CREDIT_CARD']} and mail {PII_SAMPLES['EMAIL']}", {"text": "a lovely class"}, {"text": "f*ck off"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "ethics.yaml"
    config.write_text(yaml.safe_dump({"ethics": [{"name": "blocklist", "terms": ["lovely"], "action": "flag"}]}))
    out, log = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    argv = ["ethics", "check", "--config", str(config), "--policy", "pii", "--policy", "toxicity", "--input", str(source), "--output", str(out), "--audit-log", str(log)]
    assert main(argv) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["decision"] for r in results] == ["redact", "flag", "block"]
    assert results[0]["redacted"] == "my card is <CREDIT_CARD> and mail <EMAIL>"
    assert set(results[0]) == {"decision", "redacted", "reasons", "spans"}
    audit = log.read_text()
    entries = [json.loads(line) for line in audit.splitlines()]
    assert len(entries) == 3 * 3 and {e["policy"] for e in entries} == {"blocklist", "pii", "toxicity"}
    assert {"time", "stage", "policy", "decision", "reasons", "span_types", "text_hmac_sha256"} <= set(entries[0])
    for secret in (*PII_SAMPLES.values(), "4111111111111111", "jane.doe", "example.co.uk", "lovely class", "f*ck"):
        assert secret not in audit
    assert main(["ethics", "check", "--policy", "pii", "--option", "pii.acton=block", "--input", str(source)]) == 2
    assert "did you mean 'action'" in capsys.readouterr().err
    # rows are written as they are checked: a bad row stops the command after those before it
    source.write_text('"mail a@example.com"\n"fine"\n{"txt": 1}\n"never read"\n')
    assert main([*argv[:-4], "--output", str(out), "--overwrite", "--audit-log", str(log)]) == 2
    assert "in.jsonl:3: expected a JSON string or an object with a string 'text'" in capsys.readouterr().err
    assert [json.loads(line)["decision"] for line in out.read_text().splitlines()] == ["redact", "allow"]
    assert len(log.read_text().splitlines()) == 9 + 2 * 3  # the two checked rows' decisions are logged too


def test_run_config_ethics_is_validated(tiny_config, tmp_path):
    with pytest.raises(lccore.ConfigError, match=r"ethics: expected a list"):
        lccore.load_config({**tiny_config, "ethics": "pii"})
    with pytest.raises(lccore.PluginError, match=r"ethics\[0\]: unknown ethics_policy 'pi'"):
        lccore.train({**tiny_config, "ethics": ["pi"]}, tmp_path / "run", progress=False)


def test_training_data_is_filtered_and_redacted_before_tokenisation(tiny_config, sentiment_files, tmp_path, capsys):
    rows = [json.loads(line) for line in Path(sentiment_files["train"]).read_text().splitlines()]
    rows[0]["text"] += f" mail {PII_SAMPLES['EMAIL']}"
    rows[1]["text"] += " fuuuck"
    rows[2]["text"] += " sh1t"
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {**tiny_config, "task": {**tiny_config["task"], "train": str(train)}, "train": {**tiny_config["train"], "epochs": 1}}
    config["ethics"] = ["pii", "toxicity"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--output", str(run_dir), "-q"]) == 0
    captured = capsys.readouterr()
    assert "warning: ethics: 2 of 160 training examples dropped (1.2%), 1 redacted" in captured.out
    # said when the data is cleaned too, before training starts, per policy with its reasons
    assert "lccore: warning: ethics dropped 2 of 160 training examples (1.2%): toxicity: 2 blocked (toxicity: word list x2)" in captured.err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = metrics["ethics"]["training_data"]
    assert (report["examples"], report["dropped"], report["changed"]) == (160, 2, 1)
    assert report["policies"]["pii"]["redact"] == 1 and report["policies"]["pii"]["reasons"] == {"pii: EMAIL": 1}
    assert report["policies"]["toxicity"] == {"block": 2, "redact": 0, "flag": 0, "reasons": {"toxicity: word list": 2}}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["data"]["train"]["examples"] == 158 and manifest["ethics"]["policies"] == ["pii", "toxicity"]
    audit = (run_dir / "ethics_audit.jsonl").read_text()
    assert len(audit.splitlines()) == 2 * 160 and PII_SAMPLES["EMAIL"] not in audit and "example.co.uk" not in audit
    # written as the data was filtered, in the scratch folder, then moved with its key: the entries verify
    entries = [json.loads(line) for line in audit.splitlines()]
    assert ethics.AuditLog.verify(rows[0]["text"], entries[0], run_dir / "ethics_audit.jsonl")
    assert not ethics.AuditLog.verify(rows[1]["text"], entries[0], run_dir / "ethics_audit.jsonl")
    assert os.stat(run_dir / "ethics_audit.jsonl.key").st_mode & 0o777 == 0o600
    refused = lccore.load(run_dir).predict(["fuuuck this"])[0]  # the run's own policies guard its predictions
    assert refused["refused"] and refused["reasons"] == ["toxicity: word list"]


def test_predict_refuses_blocked_inputs_and_redacts_outputs(trained_run, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ["great film", {"text": "f*ck this film"}, "superb, mail a@example.com"]))
    config = tmp_path / "ethics.yaml"
    config.write_text(yaml.safe_dump({"ethics": [{"name": "blocklist", "terms": ["negative"], "action": "redact", "stages": ["output"]}]}))
    log = tmp_path / "audit.jsonl"
    argv = ["predict", str(trained_run.output_dir), "--input", str(source), "--policy", "toxicity", "--policy", "pii", "--ethics-config", str(config), "--audit-log", str(log), "-q"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    assert records[1] == {"refused": True, "stage": "input", "decision": "block", "reasons": ["toxicity: word list"]}
    assert records[0]["label"] in ("positive", "<BLOCKED>") and "score" in records[2]
    assert records[2]["redacted_input"] == ["pii: EMAIL"]
    for record in (records[0], records[2]):  # an output a policy redacted says so too
        assert (record["label"] == "<BLOCKED>") == (record.get("redacted_output") == ["blocklist: term 'negative'"])
    assert "a@example.com" not in log.read_text()
    stages = {json.loads(line)["stage"] for line in log.read_text().splitlines()}
    assert stages == {"input", "output"}


def test_unredactable_examples_are_dropped_not_trained_on(engine):
    import attrs

    @attrs.frozen
    class Example:
        text: str
        offsets: tuple

    task = lccore.Task()
    examples = [Example("call +44 20 7946 0958", ((0, 4),)), Example("fine", ((0, 4),))]
    kept, report = ethics.filter_examples(policies(engine, "pii"), task, examples)
    assert kept == [examples[1]] and report["dropped"] == 1 and report["dropped_unredactable"] == 1


def test_bias_audit_reports_flip_rate_and_score_shift_per_group(trained_run, tmp_path, capsys, bars):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in ["he said it was great", {"text": "James found it dull"}, "the German film was superb", "plain <i>text</i>"]))
    terms = tmp_path / "terms.yaml"
    terms.write_text(yaml.safe_dump({"pets": {"cats": ["cat"], "dogs": ["dog"]}}))
    assert main(["audit", str(trained_run.output_dir), "--data", str(data), "--terms", str(terms), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 4 and set(report["groups"]) == {"gender", "names", "nationality", "pets"}
    gender = report["groups"]["gender"]
    assert gender["texts_with_terms"] == 1 and gender["counterfactuals"] == 1
    assert gender["worst"][0]["counterfactual"] == "she said it was great"
    assert report["groups"]["nationality"]["counterfactuals"] == 11
    assert report["groups"]["pets"]["counterfactuals"] == 0 and report["groups"]["pets"]["flip_rate"] is None
    for group in report["groups"].values():
        assert group["flip_rate"] is None or 0.0 <= group["flip_rate"] <= 1.0
        assert all(abs(row["score_shift"]) <= 1.0 for row in group["worst"])
    assert report["invariance"]["tests"] == 1 + 1 + 11
    bars.clear()
    assert main(["audit", str(trained_run.output_dir), "--data", str(data), "--json"]) == 0
    (bar,) = bars  # the texts, a window at a time
    assert (bar.desc, bar.total, bar.n, bar.enabled) == ("audit", 4, 4, True)
    capsys.readouterr()
    page = tmp_path / "audit.html"
    assert main(["audit", str(trained_run.output_dir), "--data", str(data), "--terms", str(terms), "--html", str(page)]) == 0
    html = page.read_text()
    assert "report written to" in capsys.readouterr().out
    assert all(f"<td>{group}</td>" in html for group in report["groups"])
    assert "<mark>he</mark> said it was great" in html and "<mark>she</mark> said it was great" in html
    assert "plain <i>" not in html  # the data's text never becomes markup
    assert f"{report['invariance']['tests'] - report['invariance']['failures']} of {report['invariance']['tests']} counterfactuals" in html
    assert main(["audit", str(trained_run.output_dir), "--data", str(data)]) == 0
    assert "invariance:" in capsys.readouterr().out


def test_bias_audit_reads_a_window_at_a_time_and_reports_the_same(trained_run, tmp_path, capsys, monkeypatch):
    from lccore_ethics import audit as audit_module

    texts = ["he said it was great", "James found it dull", "she and he liked it", "the German film was superb", "plain text"] * 3
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in texts))
    reports = []
    for window in (1024, 2):  # the whole file in one window, then two texts at a time
        monkeypatch.setattr(audit_module, "AUDIT_WINDOW", window)
        assert main(["audit", str(trained_run.output_dir), "--data", str(data), "--json", "-q"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    whole, windowed = reports
    assert windowed["examples"] == whole["examples"] == 15 and windowed["invariance"] == whole["invariance"]
    for name, group in whole["groups"].items():
        other = windowed["groups"][name]
        assert (other["texts_with_terms"], other["counterfactuals"]) == (group["texts_with_terms"], group["counterfactuals"]), name
        assert [row["counterfactual"] for row in other["worst"]] == [row["counterfactual"] for row in group["worst"]], name
        if group["mean_score_shift"] is not None:
            assert other["mean_score_shift"] == pytest.approx(group["mean_score_shift"], abs=1e-5)
            assert other["by_class"].keys() == group["by_class"].keys()
    assert whole["groups"]["gender"]["texts_with_terms"] == 6  # texts of the data, a repeated one each time


def test_toxicity_classifier_judge(trained_run, engine):
    judge = policies(engine, {"name": "toxicity", "classifier": str(trained_run.output_dir), "label": "negative", "threshold": 0.5})
    assert ethics.apply(judge, "awful dull boring", "input")["decision"] == "block"
    assert ethics.apply(judge, "great superb lovely", "input")["decision"] == "allow"


def test_pii_finds_person_names_with_a_real_ner_run_named_relative_to_the_config(ner_run, tiny_config, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    relative = os.path.relpath(ner_run.output_dir, project)
    config = project / "ethics.yaml"
    config.write_text(yaml.safe_dump({"ethics": [{"name": "pii", "ner": relative}]}))
    monkeypatch.chdir(tmp_path)  # not the config's folder: the path must still mean the NER run
    items = ethics.items_from_cli([], str(config))
    assert items == [{"name": "pii", "ner": str(Path(ner_run.output_dir).resolve())}]
    text, result = ethics.Guard.build(items).check("Today Alice met Bob in New York", "input")
    assert text == "Today <PERSON> met <PERSON> in New York"
    assert [(s["start"], s["end"], s["type"]) for s in result["spans"]] == [(6, 11, "PERSON"), (16, 19, "PERSON")]
    run_config = project / "run.yaml"
    run_config.write_text(yaml.safe_dump({**tiny_config, "ethics": ["toxicity", {"name": "pii", "ner": relative}, {"name": "toxicity", "classifier": "judge", "label": "bad"}]}))
    loaded = lccore.load_config(run_config)
    assert loaded.ethics == ["toxicity", {"name": "pii", "ner": items[0]["ner"]}, {"name": "toxicity", "classifier": str(project.resolve() / "judge"), "label": "bad"}]


def test_python_api_predict_applies_the_policies_and_logs_them(trained_run, tmp_path):
    log = tmp_path / "audit.jsonl"
    predictor = lccore.load(trained_run.output_dir, ethics=["toxicity", "pii"], audit_log=log)
    assert predictor.guard.names == ["toxicity", "pii"]
    records = predictor.predict(["great film", "f*ck this film", "superb, mail a@example.com"])
    assert records[1] == {"refused": True, "stage": "input", "decision": "block", "reasons": ["toxicity: word list"]}
    assert records[0] == predictor.predict(["great film"], guard=False)[0]
    # predicted on the redacted text, and the row says so
    assert records[2] == {**predictor.predict(["superb, mail <EMAIL>"], guard=False)[0], "redacted_input": ["pii: EMAIL"]}
    assert "redacted_input" not in records[0]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["stage"] for e in entries} == {"input", "output"} and "a@example.com" not in log.read_text()
    assert lccore.load(trained_run.output_dir).predict(["f*ck this film"])[0]["label"] in ("positive", "negative")  # no policies: no guard


def test_guard_stream_checks_each_sentence_and_stops_the_source_when_one_is_blocked(engine):
    consumed, closed = [], []

    def source(prompt):
        try:
            for piece in ["Write to a@", "example.com now. ", "All ", "fine.\n", "Then f*ck", " it. ", "never shown."]:
                consumed.append(piece)
                yield piece
        finally:
            closed.append(True)

    guard = ethics.Guard(policies(engine, "pii", "toxicity"))
    out = list(guard.stream("hello", source))
    assert out[:2] == ["Write to <EMAIL> now. ", "All fine.\n"]
    assert len(out) == 3 and out[2]["refused"] and out[2]["stage"] == "output"
    assert closed == [True] and "never shown." not in consumed
    consumed.clear()
    assert list(guard.stream("f*ck you", source)) == [{"refused": True, "stage": "input", "decision": "block", "reasons": ["toxicity: word list"]}]
    assert consumed == []  # a blocked prompt is never answered
    assert "".join(guard.stream("hi", lambda p: iter(["No sentence end, ", "mail a@b.org"]))) == "No sentence end, mail <EMAIL>"
    assert "".join(ethics.Guard().stream("f*ck", lambda p: iter(["as ", "is"]))) == "as is"
    closed.clear()
    reader = guard.stream("hello", source)
    assert next(reader) == "Write to <EMAIL> now. "
    reader.close()  # the reader went away: the source is closed too
    assert closed == [True]


def test_guard_checks_every_text_of_an_object_query(engine):
    guard = ethics.Guard(policies(engine, "pii", "toxicity"))
    seen = []

    def answer(query):
        seen.append(query)
        return {"text": "ok"}

    chat = {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "mail a@example.com"}]}
    assert guard.answer(chat, answer) == {"text": "ok"}
    assert seen[-1] == {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "mail <EMAIL>"}]}
    blocked = guard.answer({"messages": [{"role": "user", "content": "f*ck off"}]}, answer)
    assert blocked["refused"] and blocked["stage"] == "input" and len(seen) == 1
    assert list(guard.stream({"prompt": "sh1t"}, lambda q: iter(["never"]))) == [ethics.refusal("input", {"decision": "block", "reasons": ["toxicity: word list"]})]
