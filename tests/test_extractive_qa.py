"""The `extractive_qa` task: SQuAD JSON, windows over long contexts, no-answer questions, EM/F1."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

import lccore
from conftest import PEOPLE
from lccore_extractive_qa.squad_metric import exact_match, f1

CITIES = ["paris", "london", "rome", "new york", "boston"]
FILLER = ["the", "film", "was", "a", "plot", "and", "it", "very", "show", "book", "meal", "today"]


def squad(count: int, seed: int, *, unanswerable: float = 0.0) -> dict:
    """Questions whose answer is the city a person lives in, placed anywhere in a long context."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(count):
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        filler = [rng.choice(FILLER) for _ in range(rng.randint(10, 40))]
        cut = rng.randint(0, len(filler))
        if rng.random() < unanswerable:
            fact = f"nobody knows anything about {person} ."
            answers, impossible = [], True
        else:
            fact = f"{person} lives in {city} ."
            answers, impossible = None, False
        context = " ".join(filler[:cut] + [fact] + filler[cut:])
        if answers is None:
            start = context.index(fact) + len(f"{person} lives in ")
            answers = [{"text": city, "answer_start": start}]
        qa = {"id": f"q{seed}-{i}", "question": f"where does {person} live ?", "answers": answers}
        if impossible:
            qa["is_impossible"] = True
        paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "v2.0" if unanswerable else "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def write(path, document):
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture(scope="session")
def qa_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    config = {
        "model": tiny_model,
        "task": {
            "name": "extractive_qa", "doc_stride": 8,
            "train": write(folder / "train.json", squad(300, 1, unanswerable=0.25)),
            "dev": write(folder / "dev.json", squad(40, 2, unanswerable=0.25)),
            "test": write(folder / "test.json", squad(60, 3, unanswerable=0.25)),
        },
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 10, "batch_size": 16, "max_length": 32, "seed": 5},
    }
    return lccore.train(config, folder / "run", progress=False)


def test_qa_learns_over_windows_and_no_answer_questions(qa_run):
    after, before = qa_run.metrics["test"]["after"], qa_run.metrics["test"]["before"]
    assert after["f1"] >= 80 and after["f1"] > before["f1"] + 40
    assert qa_run.config.head.name == "span_qa"


def test_qa_prediction_has_character_offsets(qa_run):
    predictor = lccore.load(qa_run.output_dir)
    # 60 words of filler: the fact sits well beyond the first 32-token window
    context = " ".join(["the film was a very show"] * 10) + " carol lives in new york . and it was a show"
    answer = predictor.predict([{"question": "where does carol live ?", "context": context}])[0]
    assert answer["answer"] == "new york"
    assert context[answer["start"] : answer["end"]] == "new york" and 0 < answer["score"] <= 1
    nothing = predictor.predict([{"question": "where does carol live ?", "context": "nobody knows anything about carol . the film was a show"}])[0]
    assert nothing == {"answer": "", "start": None, "end": None, "score": nothing["score"]}


def test_windows_are_made_for_long_contexts(qa_run):
    predictor = lccore.load(qa_run.output_dir)
    example = predictor.task.parse_input({"question": "where does bob live ?", "context": " ".join(["the film"] * 60)}, "x")
    features = predictor.task.encode([example], predictor.tokenizer, 32)
    assert len(features) > 3 and all(len(f["input_ids"]) <= 32 for f in features)
    # Each window keeps its own part of the context, not all of it (a long document's windows
    # each held, and cached, the whole context: storage grew with its square).
    for feature in features:
        start = feature["context_start"]
        inside = [o for o in feature["offsets"] if o is not None]
        assert feature["context"] == example.context[start : inside[-1][1]] and start == inside[0][0]
    assert sum(len(f["context"]) for f in features) < 2 * len(example.context)


def test_long_contexts_are_tokenised_a_few_at_a_time(qa_run, monkeypatch):
    """No tokenizer call reads more than GROUP_CHARS characters (it takes ~140 bytes a character);
    the windows are those of one call."""
    from lccore_extractive_qa import task as qa_task

    predictor = lccore.load(qa_run.output_dir)
    examples = [predictor.task.parse_input({"question": "where does bob live ?", "context": " ".join(["the film"] * n)}, "x") for n in (40, 90, 5, 60)]
    whole = predictor.task.encode(examples, predictor.tokenizer, 32)
    monkeypatch.setattr(qa_task, "GROUP_CHARS", 500)
    calls = []

    class Counting:  # the tokenizer, counting the characters each call reads
        def __call__(self, questions, contexts=None, **options):
            calls.append(sum(map(len, questions)) + sum(map(len, contexts or [])))
            return predictor.tokenizer(questions, contexts, **options)

        def __getattr__(self, name):
            return getattr(predictor.tokenizer, name)

    grouped = predictor.task.encode(examples, Counting(), 32)
    assert [(f["example_index"], f["input_ids"], f["offsets"]) for f in grouped] == [(f["example_index"], f["input_ids"], f["offsets"]) for f in whole]
    assert len(calls) > 2 and max(calls[1:]) <= 2 * 500  # the first call measures the questions (the stride); a longer context goes alone


def test_official_squad_normalisation():
    assert exact_match("The Eiffel Tower!", "eiffel  tower") == 1.0
    assert f1("in the new york city", "New York") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert f1("", "") == 1.0 and f1("paris", "") == 0.0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lccore.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["data"][0]["paragraphs"][1]["qas"][0]["answers"][0].update(answer_start=0), "data[0].paragraphs[1].qas[0] (id q1-1): answer"),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=[]), "data[0].paragraphs[0].qas[0] (id q1-0): no answers and not marked is_impossible"),
        (lambda d: d.pop("data"), "expected SQuAD JSON"),
    ],
)
def test_bad_squad_files(tiny_model, tmp_path, mutate, expected):
    document = squad(3, 1)
    mutate(document)
    data = write(tmp_path / "train.json", document)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": tiny_model, "task": {"name": "extractive_qa", "train": data}}))
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"lccore: error: {data}: ") and expected in result.stderr


def test_squad_v1_always_answers_with_a_span(tiny_model, tmp_path):
    config = {
        "model": tiny_model,
        "task": {"name": "extractive_qa", "train": write(tmp_path / "train.json", squad(40, 4)), "test": write(tmp_path / "test.json", squad(10, 5))},
        "train": {"epochs": 1, "max_length": 48},
    }
    run = lccore.train(config, tmp_path / "run", progress=False)
    assert "loss" in run.metrics["test"]["after"]
    predictor = lccore.load(run.output_dir)
    assert predictor.task.allow_no_answer is False
    context = "nobody knows anything about carol . the film was a show"
    answer = predictor.predict([{"question": "where does carol live ?", "context": context}])[0]
    assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]


def test_window_overlap_that_does_not_fit_is_a_config_error(tiny_model, tmp_path):
    data = write(tmp_path / "train.json", squad(5, 6))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": tiny_model, "task": {"name": "extractive_qa", "train": data, "doc_stride": 40}, "train": {"max_length": 32}}))
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.startswith("lccore: error: task.doc_stride: 40 must be smaller than the 24 context tokens")
