"""Evaluation streamed a chunk at a time: each task's metrics accumulate over chunks to what they
give on the whole file, keeping counts and totals, not the examples."""

from __future__ import annotations

import random

import pytest
from conftest import sentiment_rows, write_jsonl

import lccore
from lccore.data import features as data_features


def chunked_and_whole(task, predictions, examples, size: int = 3) -> tuple[dict, dict]:
    accumulator = task.metrics_accumulator()
    for start in range(0, len(examples), size):
        accumulator.update(predictions[start : start + size], examples[start : start + size])
    return accumulator.compute(), task.metrics(predictions, examples)


def noisy(rng, gold, choices):
    return gold if rng.random() < 0.6 else rng.choice(choices)


def task_with_examples(name, tmp_path, count=1):
    task = lccore.Engine().create("task", name, {})
    tmp_path.mkdir(exist_ok=True)
    paths = task.example_data(tmp_path)
    examples = [e for _ in range(count) for path in paths.values() for e in task.read(path)]
    task.fit(examples)
    return task, examples


def test_text_classification_and_relations_accumulate_to_the_whole_files_scores(tmp_path):
    rng = random.Random(0)
    task, examples = task_with_examples("text_classification", tmp_path / "tc", count=5)
    predictions = [{"label": noisy(rng, e.label, task.labels)} for e in examples]
    chunked, whole = chunked_and_whole(task, predictions, examples)
    assert chunked == whole and 0 < whole["accuracy"] < 1
    from sklearn.metrics import f1_score

    assert whole["f1_macro"] == pytest.approx(f1_score([e.label for e in examples], [p["label"] for p in predictions], labels=task.labels, average="macro"))

    task, examples = task_with_examples("relation_extraction", tmp_path / "re", count=5)
    predictions = [{"relation": noisy(rng, e.relation, task.labels)} for e in examples]
    chunked, whole = chunked_and_whole(task, predictions, examples)
    assert chunked == whole and 0 < whole["f1"] < 1


def test_ner_counts_give_seqevals_scores(tmp_path):
    from seqeval.metrics import classification_report

    rng = random.Random(1)
    task, examples = task_with_examples("ner", tmp_path, count=4)
    tags = sorted({tag for e in examples for tag in e.tags})
    predictions = [{"tags": [noisy(rng, tag, tags) for tag in e.tags]} for e in examples]
    chunked, whole = chunked_and_whole(task, predictions, examples)
    assert chunked == whole
    report = classification_report([list(e.tags) for e in examples], [p["tags"] for p in predictions], output_dict=True, zero_division=0)
    assert whole["f1"] == pytest.approx(report["micro avg"]["f1-score"]) and 0 < whole["f1"] < 1
    assert whole["precision"] == pytest.approx(report["micro avg"]["precision"])
    for kind, scores in whole["per_type"].items():
        assert scores["f1"] == pytest.approx(report[kind]["f1-score"]) and scores["support"] == report[kind]["support"]


def test_question_answering_and_language_modelling_accumulate_to_the_whole_files_scores(tmp_path):
    rng = random.Random(2)
    task, examples = task_with_examples("extractive_qa", tmp_path / "qa", count=3)
    predictions = [{"answer": noisy(rng, e.answers[0][0] if e.answers else "", ["paris", "", "the film"])} for e in examples]
    chunked, whole = chunked_and_whole(task, predictions, examples)
    assert chunked == pytest.approx(whole) and 0 < whole["f1"] < 100

    task, examples = task_with_examples("mlm", tmp_path / "lm", count=3)
    predictions = [{"nll": rng.uniform(1, 30), "tokens": rng.randint(1, 12)} for _ in examples]
    chunked, whole = chunked_and_whole(task, predictions, examples)
    assert chunked == pytest.approx(whole)


def test_evaluate_streams_chunks_into_the_accumulator_and_scores_as_predicting_all_does(trained_run, tmp_path, monkeypatch):
    from lccore_text_classification.task import LabelPairs

    monkeypatch.setenv("LCCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 7)
    sizes = []
    original = LabelPairs.update
    monkeypatch.setattr(LabelPairs, "update", lambda self, p, e: (sizes.append(len(e)), original(self, p, e)))
    path = write_jsonl(tmp_path / "test.jsonl", sentiment_rows(45, seed=9))
    predictor = lccore.load(trained_run.output_dir)
    streamed = predictor.evaluate(path)
    assert sizes == [7] * 6 + [3]  # a chunk at a time, every example once
    examples = list(predictor.task.read(path))
    predictions, loss = predictor._run(examples, batch_size=None, progress=False, desc="evaluate", with_loss=True)
    assert streamed["accuracy"] == predictor.task.metrics(predictions, examples)["accuracy"]
    assert streamed["loss"] == pytest.approx(loss, rel=1e-5)


def test_evaluate_without_data_scores_the_runs_own_test_split_of_several_files(tiny_config, tmp_path, capsys):
    """`lccore evaluate RUN` with no --data (the README's line after the quickstart) takes the run's
    test split, here two files; it scores what evaluating their rows as one file scores."""
    import json

    from lccore.cli import main

    rows = sentiment_rows(40, seed=7)
    parts = [write_jsonl(tmp_path / "test-a.jsonl", rows[:25]), write_jsonl(tmp_path / "test-b.jsonl", rows[25:])]
    whole = write_jsonl(tmp_path / "test-all.jsonl", rows)
    config = {**tiny_config, "task": {**tiny_config["task"], "test": [str(p) for p in parts]}, "train": {**tiny_config["train"], "max_steps": 2}}
    run = lccore.train(config, tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["evaluate", str(run.output_dir), "-q"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own == run.load().evaluate(str(whole))
    assert own["accuracy"] == pytest.approx(run.metrics["test"]["after"]["accuracy"])
    bare = {**tiny_config, "task": {k: v for k, v in tiny_config["task"].items() if k not in ("test", "dev")}, "train": {**tiny_config["train"], "max_steps": 1}}
    no_split = lccore.train(bare, tmp_path / "bare", progress=False)
    assert main(["evaluate", str(no_split.output_dir), "-q"]) == 2
    assert "give --data FILE" in capsys.readouterr().err
