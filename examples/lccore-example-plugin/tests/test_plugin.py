"""The distribution's own tests (run them with the distribution installed: `pip install -e ".[test]"`).

lccore's conformance kit checks every component against its kind's contract; the tests after it
check what the kit cannot know: that a pair really is two segments, that the task is learnt on a
tiny model, and that occlusion points at the words that decide."""

from __future__ import annotations

import json
import random
import re

import pytest

import lccore
from lccore.testing import build_tiny_model, check_plugin

PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "london", "rome"]
THINGS = ["film", "book", "meal", "show", "plot"]
FILLER = ["the", "was", "a", "and", "really", "quite", "very", "it", "today", "with", "went", "to", "in", "at"]


def pair_rows(count: int, seed: int) -> list[dict]:
    """Headlines "PERSON visited PLACE"; a matching body names the same person and place, a
    mismatching one another person and another place (every word is in the tiny model's vocabulary)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        match = i % 2 == 0
        if not match:
            person_b, place_b = rng.choice([p for p in PEOPLE if p != person]), rng.choice([p for p in PLACES if p != place])
        else:
            person_b, place_b = person, place
        words = [person_b, place_b, rng.choice(THINGS)] + rng.sample(FILLER, rng.randint(0, 2))
        rng.shuffle(words)
        rows.append({"headline": f"{person} visited {place}", "body": " ".join(words), "label": "match" if match else "mismatch"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("headline-match")
    files = {"train": write_jsonl(folder / "train.jsonl", pair_rows(160, seed=1)), "dev": write_jsonl(folder / "dev.jsonl", pair_rows(60, seed=2))}
    config = {
        "model": tiny_model,  # the head defaults to headline_body_head: the task says so
        "task": {"name": "headline_match", **{split: str(path) for split, path in files.items()}},
        # a tiny model with random weights at a high rate trains as from scratch: with a warmup and a
        # decay over the run (lccore's defaults suit pretrained models: no warmup, the rate held)
        "optimizer": {"lr": 5e-3, "schedule": "linear", "warmup_ratio": 0.1},
        "train": {"epochs": 6, "batch_size": 16, "max_length": 32, "seed": 7},
        "data": {"cache": False},  # no tokenised copy left in ~/.cache/lccore
    }
    run = lccore.train(config, folder / "run", progress=False)
    return run, files


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("lccore-example-plugin", explainer_tasks={"occlusion": "headline_match"})
    assert not report.skipped and not report.failures
    checked = {(c.kind, c.name) for c in report.passed}
    assert {("task", "headline_match"), ("head", "headline_body_head"), ("explainer", "occlusion"), ("optimizer", "lion"),
            ("ethics_policy", "word_blocklist")} <= checked


def test_a_pair_is_encoded_as_two_segments_and_a_long_body_is_cut_first(tiny_model):
    from transformers import AutoTokenizer

    from lccore_headline_match.task import Example, HeadlineMatchTask

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    body = "bob went to rome today " * 10
    [feature] = HeadlineMatchTask().encode([Example("alice visited paris", body, "match", "t:1")], tokenizer, 16)
    assert len(feature["input_ids"]) == 16 and feature["labels"] == 1
    segments = feature["token_type_ids"]
    second = segments.index(1)
    assert set(segments[:second]) == {0} and set(segments[second:]) == {1}
    assert tokenizer.decode(feature["input_ids"][:second], skip_special_tokens=True) == "alice visited paris"  # whole
    assert body.startswith(tokenizer.decode(feature["input_ids"][second:], skip_special_tokens=True))  # cut


def test_the_task_is_learnt_on_a_tiny_model(trained):
    run, files = trained
    assert run.config.head.name == "headline_body_head"
    assert (run.model_dir / "head.safetensors").is_file() and (run.model_dir / "head.json").is_file()
    predictor = lccore.load(run.output_dir)
    metrics = predictor.evaluate(files["dev"])
    assert metrics["accuracy"] >= 0.75 and metrics["f1_match"] >= 0.7, metrics  # chance is 0.5
    records = predictor.predict([{"headline": "carol visited rome", "body": "carol went to rome"},
                                 {"headline": "carol visited rome", "body": "dave went to paris"}])
    assert [r["label"] for r in records] == ["match", "mismatch"]
    assert all(0.5 <= r["score"] <= 1 for r in records)


def test_occlusion_scores_the_words_that_decide(trained):
    run, _ = trained
    predictor = lccore.load(run.output_dir)
    inputs = [{"headline": "erin visited london", "body": "the show in london with erin"}]
    [record] = predictor.explain(inputs, explainer="occlusion")
    assert record["prediction"]["label"] == "match" and record["target"] == {"label": "match"}
    assert record["text"] == inputs[0]["headline"] and record["text_pair"] == inputs[0]["body"]
    for word in record["words"]:  # each word points into its own field
        assert record[word.get("field", "text")][word["start"]:word["end"]] == word["text"]
    top = max(record["words"], key=lambda w: w["score"])
    assert top["text"] in ("erin", "london"), record["words"]  # the shared names, not the filler
    # a score is the drop of p(match) without that word: check one against the predictor itself
    word = next(w for w in record["words"] if w.get("field") == "text_pair" and w["text"] == "london")
    example = predictor.task.parse_input(inputs[0], "check")
    without = predictor.task.with_texts(example, {"text_pair": "the show in with erin"})
    import torch

    p_match = torch.softmax(torch.stack(predictor.logits([example, without])), dim=-1)[:, 1]
    assert word["score"] == pytest.approx(float(p_match[0] - p_match[1]), abs=1e-5)
    assert record["cost"]["model_evaluations"] == 1 + len(record["words"])
    # the generic names of a pair's texts (what `lccore explain --text A --text-pair B` passes) read the same
    [same] = predictor.explain([{"text": inputs[0]["headline"], "text_pair": inputs[0]["body"]}], explainer="occlusion")
    assert same["words"] == record["words"]


def test_an_ethics_policy_redacts_either_text_of_a_pair(trained):
    run, _ = trained
    predictor = lccore.load(run.output_dir, ethics=[{"name": "word_blocklist", "words": ["rome"]}])
    [record] = predictor.predict([{"headline": "bob visited paris", "body": "bob went to rome"}])
    assert record["redacted_input"] == ["blocklisted word at input"]


def test_bad_rows_and_inputs_are_named(tmp_path):
    from lccore_headline_match.task import HeadlineMatchTask

    task = HeadlineMatchTask()
    with pytest.raises(lccore.DataError, match=r"input 3: missing key 'body'"):
        task.parse_input({"headline": "a great film"}, "input 3")
    with pytest.raises(lccore.DataError, match=r"input 2: missing key 'text_pair' \(expected an object with strings 'text' and 'text_pair'\)"):
        task.parse_input({"text": "a great film"}, "input 2")
    with pytest.raises(lccore.DataError, match=r"input 1: headline_match takes an object with strings 'headline' and 'body', got a string"):
        task.parse_input("a great film", "input 1")
    path = tmp_path / "train.jsonl"
    path.write_text('{"headline": "a", "body": "b", "label": true}\n{"headline": "a", "body": "b", "label": "maybe"}\n')
    with pytest.raises(lccore.DataError, match=re.escape(f"{path}:2: 'label' must be \"match\" or \"mismatch\" (or true / false), got \"maybe\"")):
        list(task.read(path))
    with pytest.raises(lccore.DataError, match="training data needs both labels"):
        task.fit([task.parse_input({"headline": "a", "body": "b", "label": True}, "input 1")])


def test_redacts_a_listed_word():
    from lccore_word_blocklist import WordBlocklist, WordBlocklistOptions

    decision = WordBlocklist(WordBlocklistOptions(words=["awful"])).inspect("An Awful plot", "input")
    assert decision["decision"] == "redact" and decision["redacted"] == "An ***** plot"
