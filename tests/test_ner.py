"""The `ner` task: CoNLL and JSONL readers, sub-word alignment, seqeval metrics, offsets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lccore

def test_ner_learns_and_reports_seqeval_metrics(ner_run):
    after = ner_run.metrics["test"]["after"]
    assert after["f1"] >= 0.9 and after["f1"] > ner_run.metrics["test"]["before"]["f1"] + 0.5
    assert set(after["per_type"]) == {"PER", "LOC"}
    assert after["per_type"]["PER"]["support"] > 0
    assert ner_run.config.head.name == "token_classifier"
    assert ner_run.metrics["best"]["metric"] == "f1"


def test_ner_predicts_entities_with_character_offsets(ner_run):
    predictor = lccore.load(ner_run.output_dir)
    text = "Today Alice met Bob in New York"
    record = predictor.predict([{"text": text}])[0]
    found = [(e["text"], e["type"]) for e in record["entities"]]
    assert found == [("Alice", "PER"), ("Bob", "PER"), ("New York", "LOC")]
    for entity in record["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    tokens = ["carol", "lives", "in", "boston", "."]
    record = predictor.predict([tokens])[0]
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in record["entities"]] == [("carol", "PER", 0, 5), ("boston", "LOC", 15, 21)]


def test_saved_ner_model_loads_with_plain_transformers(ner_run):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(ner_run.model_dir)
    assert set(model.config.id2label.values()) == {"O", "B-PER", "B-LOC", "I-LOC"}


def test_first_subtoken_alignment_and_label_all_subtokens(tiny_model):
    from transformers import AutoTokenizer

    from lccore_ner import NEROptions
    from lccore_ner.task import NERTask, from_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    example = from_tokens(["alice", "visited", "boston"], ["B-PER", "O", "B-LOC"], "x:1")
    first_only = NERTask(NEROptions())
    first_only.fit([example])
    feature = first_only.encode([example], tokenizer, 32)[0]
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == ["[CLS]", "alice", "visited", "bos", "##ton", "[SEP]"]
    labels = first_only.labels
    assert feature["labels"] == [-100, labels.index("B-PER"), labels.index("O"), labels.index("B-LOC"), -100, -100]
    every = NERTask(NEROptions(label_all_subtokens=True, labels=["O", "B-PER", "B-LOC", "I-LOC"]))
    assert every.encode([example], tokenizer, 32)[0]["labels"][3:5] == [2, 3]  # B-LOC, then I-LOC


def test_a_text_longer_than_max_length_is_read_in_windows(ner_run):
    """Words beyond max_length (32 tokens here) were tagged O, their entities missed; the text is
    now read in overlapping windows and every word tagged, with offsets into the whole text."""
    predictor = lccore.load(ner_run.output_dir)
    tokens = ["the", "show"] * 20 + ["alice", "lives", "in", "rome"] + ["the", "show"] * 20 + ["bob", "met", "carol"]
    record = predictor.predict([tokens])[0]
    assert len(record["tags"]) == len(tokens)
    found = [(e["text"], e["type"]) for e in record["entities"]]
    assert found == [("alice", "PER"), ("rome", "LOC"), ("bob", "PER"), ("carol", "PER")], record["entities"]
    text = " ".join(tokens)
    assert all(text[e["start"] : e["end"]] == e["text"] for e in record["entities"])
    from lccore_ner.task import from_tokens

    gold = from_tokens(tokens, ["O"] * 40 + ["B-PER", "O", "O", "B-LOC"] + ["O"] * 40 + ["B-PER", "O", "B-PER"], "x:1")
    assert predictor.task.metrics([record], [gold])["recall"] == 1.0
    # The windows share a quarter of their tokens, and each keeps only its own words' text.
    features = predictor.task.encode([predictor.task.parse_input(tokens, "x")], predictor.tokenizer, 32)
    assert len(features) >= 3 and all(len(f["input_ids"]) <= 32 for f in features)
    assert sum(len(f["text"]) for f in features) < 2 * len(text)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lccore.cli", *args], capture_output=True, text=True, timeout=300)


def test_ner_cli_predict_and_evaluate(ner_run, ner_files, tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Erin lives in Paris."}) + "\n" + json.dumps("Dave went to Rome") + "\n")
    result = run_cli("predict", str(ner_run.output_dir), "--input", str(inputs), "-q")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [[(e["text"], e["type"]) for e in r["entities"]] for r in rows] == [[("Erin", "PER"), ("Paris", "LOC")], [("Dave", "PER"), ("Rome", "LOC")]]
    result = run_cli("evaluate", str(ner_run.output_dir), "--data", str(ner_files["train"]), "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["f1"] >= 0.9


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.conll", "Alice B-PER\nlives O\nParis\n", "bad.conll:3: expected a token and a tag"),
        ("bad.conll", "Alice B-PER\nlives X-LOC\n", "bad.conll:2: tag 'X-LOC' is not O or B-/I-/E-/S-TYPE"),
        ("bad.jsonl", '{"tokens": ["alice", "lives"], "tags": ["B-PER"]}\n', "bad.jsonl:1: 2 tokens but 1 tags"),
        ("bad.jsonl", '{"tokens": ["alice"], "tags": ["B-PER"]}\n{"tokens": "alice", "tags": []}\n', "bad.jsonl:2: 'tokens' must be a list"),
    ],
)
def test_bad_ner_rows(ner_config, tmp_path, name, content, expected):
    import yaml

    data = tmp_path / name
    data.write_text(content)
    config = {**ner_config, "task": {**ner_config["task"], "train": str(data)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path), "--output", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"lccore: error: {data}{expected[len(name):]}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_tag_at_evaluation(ner_run, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"tokens": ["alice"], "tags": ["B-PER"]}\n{"tokens": ["acme"], "tags": ["B-ORG"]}\n')
    result = run_cli("evaluate", str(ner_run.output_dir), "--data", str(data))
    assert result.returncode == 2
    assert result.stderr.strip() == f"lccore: error: {data}:2: tag 'B-ORG' was not seen in training (known: O, B-LOC, B-PER, I-LOC)"


def test_crf_head_trains_decodes_with_viterbi_and_reloads(ner_config, tmp_path):
    config = {**ner_config, "head": "crf", "task": {**ner_config["task"], "label_all_subtokens": True}}
    run = lccore.train(config, tmp_path / "run", progress=False)
    assert run.metrics["test"]["after"]["f1"] >= 0.9
    predictor = lccore.load(run.output_dir)
    text = "Today Alice met Bob in New York"
    record = predictor.predict([text])[0]
    assert [(e["text"], e["type"]) for e in record["entities"]] == [("Alice", "PER"), ("Bob", "PER"), ("New York", "LOC")]
    # Predictions follow the Viterbi path, not per-token argmax: forbid entering I-LOC except from
    # B-/I-LOC, then push every token's emissions towards I-LOC.
    import torch

    labels, model = predictor.task.labels, predictor.model
    inside = labels.index("I-LOC")
    with torch.no_grad():
        for tag in labels:
            if tag not in ("B-LOC", "I-LOC"):
                model.crf.transitions[labels.index(tag), inside] = -1e4
        model.crf.start_transitions[inside] = -1e4
        model.emissions.bias[inside] += 20.0
    tags = predictor.predict(["alice lives in rome"])[0]["tags"]
    assert tags[0] == "B-LOC" and tags[1:] == ["I-LOC"] * 3  # argmax alone would give I-LOC everywhere
    from transformers import AutoModel

    assert AutoModel.from_pretrained(run.model_dir).config.hidden_size == 32


def test_crf_packs_chain_positions_to_the_front():
    import torch

    from lccore_ner.crf import pack

    emissions = torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1)
    packed, mask, positions = pack(emissions, torch.tensor([[False, True, False, True], [False, False, False, False]]))
    assert packed[0, :, 0].tolist() == [1.0, 3.0] and mask.tolist() == [[True, True], [True, False]]
    assert [p.tolist() for p in positions] == [[1, 3], []]
