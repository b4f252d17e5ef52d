"""text_classification beyond one text and one label: sentence pairs (`text_pair_field`), numbers
(`label_type: regression`) and several labels per text (`label_type: multi`)."""

from __future__ import annotations

import csv
import json
import random

import pytest
from conftest import NEGATIVE, NEUTRAL, POSITIVE, sentiment_rows, write_jsonl

import lccore
from lccore.data.features import cache_entries, split_features

TRAIN = {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 7}


def run_config(tiny_model, files: dict, **task) -> dict:
    return {
        "model": tiny_model,
        "task": {"name": "text_classification", **{k: str(v) for k, v in files.items()}, **task},
        "optimizer": {"lr": 3e-3},
        "train": dict(TRAIN),
    }


def pair_rows(count: int, seed: int) -> list[dict]:
    """The label is in the second text only: the first is neutral filler."""
    rng = random.Random(seed)
    rows = []
    for row in sentiment_rows(count, seed):
        rows.append({"premise": " ".join(rng.sample(NEUTRAL, 4)), "hypothesis": row["text"], "label": row["label"]})
    return rows


def multi_rows(count: int, seed: int) -> list[dict]:
    """`pos` when a positive word is in the text, `neg` when a negative one is: none, either or both."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        labels = [["pos"], ["neg"], ["neg", "pos"], []][i % 4]
        words = rng.sample(NEUTRAL, 3) + [rng.choice(POSITIVE if name == "pos" else NEGATIVE) for name in labels]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def write_csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([row["text"], ";".join(row["label"])] for row in rows)
    return path


@pytest.fixture(scope="module")
def pair_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    files = {split: write_jsonl(folder / f"{split}.jsonl", pair_rows(n, seed)) for split, n, seed in (("train", 96, 1), ("dev", 32, 2))}
    config = run_config(tiny_model, files, text_field="premise", text_pair_field="hypothesis")
    return lccore.train(config, folder / "run", progress=False)


def test_a_pair_task_reads_the_second_text_and_predicts_from_both(pair_run, tiny_model):
    # the first text says nothing: only a model that got the second one can be right
    assert pair_run.metrics["dev"][-1]["accuracy"] >= 0.9
    predictor = lccore.load(pair_run.output_dir)
    records = predictor.predict([{"premise": "the film and the show", "hypothesis": "a wonderful book"},
                                 {"premise": "the film and the show", "hypothesis": "a dreadful book"}])
    assert [r["label"] for r in records] == ["positive", "negative"]
    # the generic pair spelling works for any pair run, whatever its field names
    generic = predictor.predict([{"text": "the film and the show", "text_pair": "a wonderful book"},
                                 {"text": "the film and the show", "text_pair": "a dreadful book"}])
    assert generic == records
    with pytest.raises(lccore.DataError, match=r"input 1: expected an object with strings 'premise' and 'hypothesis'; 'hypothesis' is missing"):
        predictor.predict([{"premise": "a film"}])
    with pytest.raises(lccore.DataError, match=r"input 1: expected an object with strings 'premise' and 'hypothesis', got a string: this task takes text pairs"):
        predictor.predict(["a film"])

    # two segments, and a long second text cut so that the first keeps its words
    from transformers import AutoTokenizer

    task, tokenizer = predictor.task, AutoTokenizer.from_pretrained(tiny_model)
    long = " ".join(["very"] * 40)
    [feature] = task.encode([task.parse_input({"premise": "great film", "hypothesis": long}, "x")], tokenizer, 16)
    assert len(feature["input_ids"]) == 16
    assert tokenizer.decode(feature["input_ids"]).startswith("[CLS] great film [SEP] very")
    assert feature["token_type_ids"].count(0) == 4 and feature["token_type_ids"].count(1) == 12
    # an ethics policy sees (and may redact) both texts
    example = task.parse_input({"premise": "a", "hypothesis": "b"}, "x")
    assert task.texts_of(example) == {"text": "a", "text_pair": "b"}
    assert task.with_texts(example, {"text_pair": "[REDACTED]"}).text_pair == "[REDACTED]"


def test_a_run_saved_before_label_types_loads_as_single_label(pair_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pair_run.output_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["task_state"].pop("label_type") == "single"
    (old / "manifest.json").write_text(json.dumps(manifest))
    records = lccore.load(old).predict([{"premise": "the show", "hypothesis": "really lovely acting"}])
    assert records[0]["label"] == "positive"

    from lccore_text_classification.head import SequenceClassifierHead
    from lccore_text_classification.mean_pooled import MeanPooledClassifier, MeanPooledClassifierHead

    assert SequenceClassifierHead().build(str(old / "model"), {"labels": ["a", "b"]}).config.problem_type == "single_label_classification"
    model = MeanPooledClassifierHead().build(str(old / "model"), {"labels": ["a", "b", "c"]})
    model.settings = {"labels": ["a", "b", "c"]}  # what a head saved before label types wrote
    model.save_pretrained(tmp_path / "mean")
    assert MeanPooledClassifier.load(tmp_path / "mean").label_type == "single"
    regression = lccore.Engine().create("task", "text_classification", {"label_type": "regression"})
    with pytest.raises(lccore.ConfigError, match=r"task\.label_type: 'regression', but the saved head was trained for 'single'"):
        regression.restore({"labels": ["a", "b"]})


def test_regression_trains_on_numbers_and_reports_correlations(tiny_model, tmp_path):
    def scored(count, seed):
        # around 0, as a scaled score would be: a tiny model's bias would spend the run climbing to 0..5
        return [{"text": r["text"], "label": 1.0 if r["label"] == "positive" else -1} for r in sentiment_rows(count, seed)]

    files = {"train": write_jsonl(tmp_path / "train.jsonl", scored(96, 1)), "dev": write_jsonl(tmp_path / "dev.jsonl", scored(32, 2))}
    config = run_config(tiny_model, files, label_type="regression")
    config["train"]["early_stopping"] = {"metric": "mse"}
    run = lccore.train(config, tmp_path / "run", progress=False)
    # mse falls as the model gets better: the best checkpoint is the lowest, not the highest
    dev = [row["mse"] for row in run.metrics["dev"]]
    assert run.metrics["best"] == {**run.metrics["best"], "metric": "mse", "value": min(dev)} and min(dev) < max(dev)
    assert all({"pearson", "spearman", "mse"} <= set(row) for row in run.metrics["dev"])
    predictor = lccore.load(run.output_dir)
    assert predictor.task.metric == "pearson"  # the default main metric: higher is better
    metrics = predictor.evaluate(files["dev"])
    assert set(metrics) >= {"pearson", "spearman", "mse", "loss"}
    assert metrics["pearson"] > 0.9 and metrics["spearman"] > 0.8 and metrics["mse"] < 0.2
    high, low = predictor.predict(["a superb film", "a horrible film"])
    assert set(high) == {"value"} and high["value"] > 0.5 > -0.5 > low["value"]
    assert predictor.model.config.problem_type == "regression" and predictor.model.config.num_labels == 1
    with pytest.raises(lccore.ConfigError, match=r"train\.label_smoothing: task 'text_classification', as configured"):
        lccore.train({**run_config(tiny_model, files, label_type="regression"), "train": {**TRAIN, "label_smoothing": 0.1}}, tmp_path / "smooth", progress=False)


def test_multi_label_from_csv_and_jsonl_predicts_every_label_over_the_threshold(tiny_model, tmp_path):
    files = {"train": write_csv(tmp_path / "train.csv", multi_rows(96, 1)), "dev": write_jsonl(tmp_path / "dev.jsonl", multi_rows(32, 2))}
    # two independent words to find: the mean of the token states finds both in a few steps, where the
    # tiny model's [CLS] (sequence_classifier; checked below) takes many more
    config = run_config(tiny_model, files, label_type="multi", threshold=0.4)
    config["head"], config["train"]["batch_size"] = "mean_pooled_classifier", 8
    run = lccore.train(config, tmp_path / "run", progress=False)
    assert run.metrics["best"]["metric"] == "f1_micro"
    assert json.loads((run.model_dir / "classifier.json").read_text())["label_type"] == "multi"
    predictor = lccore.load(run.output_dir)
    assert predictor.task.labels == ["neg", "pos"]
    metrics = predictor.evaluate(files["dev"])
    assert set(metrics) >= {"f1_micro", "f1_macro", "exact_match"}
    assert metrics["f1_micro"] > 0.9 and metrics["exact_match"] > 0.8
    records = predictor.predict(["a great and dull film", "a lovely film", "a terrible film", "the film"])
    assert [r["labels"] for r in records] == [["neg", "pos"], ["pos"], ["neg"], []]
    for record in records:
        assert record["labels"] == [name for name, p in record["scores"].items() if p >= 0.4]


@pytest.mark.parametrize("head_name", ["sequence_classifier", "mean_pooled_classifier"])
def test_each_head_takes_the_loss_of_the_label_type(tiny_model, tmp_path, head_name):
    import torch
    from torch.nn import functional
    from transformers import AutoTokenizer

    tokenizer, engine = AutoTokenizer.from_pretrained(tiny_model), lccore.Engine()
    rows = [{"text": "a great film", "label": ["pos"]}, {"text": "a dull and great show", "label": ["neg", "pos"]}, {"text": "the show", "label": []}]
    for label_type, labels, loss in (
        ("single", ["pos", "neg", "pos"], lambda logits, gold: functional.cross_entropy(logits, gold)),
        ("multi", [r["label"] for r in rows], lambda logits, gold: functional.binary_cross_entropy_with_logits(logits, gold)),
        ("regression", [0.5, -1.0, 2.0], lambda logits, gold: functional.mse_loss(logits.squeeze(-1), gold)),
    ):
        task = engine.create("task", "text_classification", {"label_type": label_type})
        examples = list(task.read(write_jsonl(tmp_path / f"{label_type}.jsonl", [{**r, "label": l} for r, l in zip(rows, labels)])))
        task.fit(examples)
        model = engine.create("head", head_name, {}).build(tiny_model, task.head_spec()).eval()
        batch = task.collate(task.encode(examples, tokenizer, 16), tokenizer)
        with torch.no_grad():
            outputs = model(**batch)
        assert outputs.logits.shape == (3, 1 if label_type == "regression" else 2)
        assert float(outputs.loss) == pytest.approx(float(loss(outputs.logits.float(), batch["labels"])), rel=1e-5)


def test_cached_features_keep_float_and_float_list_labels(tiny_model, tmp_path, monkeypatch):
    import torch
    from transformers import AutoTokenizer

    monkeypatch.setenv("LCCORE_CACHE", str(tmp_path / "cache"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    engine = lccore.Engine()
    for options, rows, dtype, shape in (
        ({"label_type": "regression"}, [{"text": "a great film", "label": 3}, {"text": "the show", "label": 0.25}], torch.float32, (2,)),
        ({"label_type": "multi"}, [{"text": "a great film", "label": ["b", "a"]}, {"text": "the show", "label": []}], torch.float32, (2, 2)),
    ):
        task = engine.create("task", "text_classification", options)
        examples = list(task.read(write_jsonl(tmp_path / f"{options['label_type']}.jsonl", rows)))
        task.fit(examples)
        cached = split_features(task, lambda: examples, tokenizer=tokenizer, max_length=16, key=options["label_type"], name="d",
                                cache=tmp_path / "cache", progress=False)
        assert cached.folder is not None  # from the Arrow cache, not memory
        labels = [cached[i]["labels"] for i in range(len(cached))]
        assert labels == ([3.0, 0.25] if options["label_type"] == "regression" else [[1.0, 1.0], [0.0, 0.0]])
        batch = task.collate([cached[i] for i in range(len(cached))], tokenizer)
        assert batch["labels"].dtype == dtype and tuple(batch["labels"].shape) == shape
    assert len(cache_entries(tmp_path / "cache")) == 2


@pytest.mark.parametrize("options, line, message", [
    ({"label_type": "regression"}, {"text": "a", "label": "high"}, r"'label' must be a finite number, got 'high'"),
    ({"label_type": "regression"}, {"text": "a", "label": True}, r"'label' must be a finite number, got True"),
    ({"label_type": "regression"}, {"text": "a", "label": "nan"}, r"'label' must be a finite number, got 'nan'"),
    ({"label_type": "multi"}, {"text": "a", "label": 2.5}, r"'label' must be a list of strings or integers \(in CSV: labels separated by ';'\), got 2.5"),
    ({"label_type": "multi"}, {"text": "a", "label": [["x"]]}, r"'label' must be a list of strings or integers"),
    ({}, {"text": "a", "label": ["x"]}, r"'label' must be a string or an integer, got \['x'\]"),
    ({"text_pair_field": "b"}, {"text": "a", "label": "x"}, r"missing key 'b'"),
    ({"text_pair_field": "b"}, {"text": "a", "b": 3, "label": "x"}, r"'b' must be a string, got int"),
])
def test_bad_labels_and_pairs_name_file_and_line(tmp_path, options, line, message):
    task = lccore.Engine().create("task", "text_classification", options)
    path = write_jsonl(tmp_path / "data.jsonl", [{"text": "fine", "label": 1, "b": "ok"} if not options.get("label_type") == "multi" else {"text": "fine", "label": ["x"]}, line])
    with pytest.raises(lccore.DataError, match=rf"data\.jsonl:2: {message}"):
        list(task.read(path))


def test_csv_numbers_and_label_lists_and_option_checks(tmp_path):
    engine = lccore.Engine()
    (tmp_path / "r.csv").write_text("text,label\na film,2.5\nthe show,-1\n", encoding="utf-8")
    assert [e.label for e in engine.create("task", "text_classification", {"label_type": "regression"}).read(tmp_path / "r.csv")] == [2.5, -1.0]
    (tmp_path / "m.csv").write_text("text,label\na film,b; a\nthe show,\n", encoding="utf-8")
    multi = engine.create("task", "text_classification", {"label_type": "multi"})
    assert [e.label for e in multi.read(tmp_path / "m.csv")] == [("a", "b"), ()]
    with pytest.raises(lccore.ConfigError, match=r"task\.label_type: expected one of single, multi, regression, got 'multiple'"):
        engine.create("task", "text_classification", {"label_type": "multiple"}, key="task")
    with pytest.raises(lccore.ConfigError, match=r"task\.threshold: must be between 0 and 1"):
        engine.create("task", "text_classification", {"label_type": "multi", "threshold": 1.0}, key="task")
    with pytest.raises(lccore.ConfigError, match=r"task\.labels: a regression task"):
        engine.create("task", "text_classification", {"label_type": "regression", "labels": ["a", "b"]}, key="task")
