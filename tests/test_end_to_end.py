"""Train -> evaluate -> predict on a tiny model built from a config, through Python and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import lccore
from lccore.cli import main


def test_training_learns_and_writes_a_complete_run(trained_run):
    metrics = trained_run.metrics
    before, after = metrics["test"]["before"], metrics["test"]["after"]
    assert set(after) >= {"accuracy", "f1_macro", "loss"}
    # The task is learnable from one word: fine-tuning must clearly beat the untrained head.
    assert after["accuracy"] >= 0.9
    assert after["accuracy"] > before["accuracy"] + 0.2
    assert metrics["dev"] and metrics["best"]["metric"] == "accuracy"
    assert metrics["best"]["value"] == max(row["accuracy"] for row in metrics["dev"])
    assert len(metrics["train"]) == metrics["train"][-1]["step"]

    run_dir = trained_run.output_dir
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["test"]["after"] == after
    assert (run_dir / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "model" / "model.safetensors").exists()
    assert not (run_dir / "model.partial").exists()

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["head"]["name"] == "sequence_classifier"  # the task's default head, recorded
    assert resolved["optimizer"]["name"] == "adamw" and resolved["optimizer"]["fused"] is None
    assert resolved["train"]["early_stopping"]["metric"] == "accuracy"
    assert resolved["task"]["text_field"] == "text"

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["components"]["task"]["plugin"] == "text_classification"
    assert manifest["components"]["task"]["distribution"] == "lccore"
    assert len(manifest["data"]["train"]["sha256"]) == 64
    assert manifest["seed"] == 7


def test_saved_model_loads_with_plain_transformers(trained_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = trained_run.model_dir
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert set(model.config.id2label.values()) == {"negative", "positive"}
    with torch.no_grad():
        logits = model(**tokenizer(["the film was superb", "the film was dreadful"], return_tensors="pt", padding=True)).logits
    labels = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert labels == ["positive", "negative"]


def test_predictor_keeps_input_order_and_matches_single_predictions(trained_run):
    predictor = lccore.load(trained_run.output_dir)
    texts = ["great", "the plot and the acting were really quite dull", "lovely film", "it was a very boring show and a dull book"]
    batched = predictor.predict(texts, batch_size=3)
    singles = [predictor.predict([t])[0] for t in texts]
    assert [p["label"] for p in batched] == ["positive", "negative", "positive", "negative"]
    for a, b in zip(batched, singles):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert all(0.5 <= p["score"] <= 1.0 for p in batched)


def test_evaluate_matches_training_test_metrics(trained_run, sentiment_files):
    metrics = lccore.load(trained_run.output_dir).evaluate(sentiment_files["test"])
    assert metrics["accuracy"] == pytest.approx(trained_run.metrics["test"]["after"]["accuracy"])


def test_cli_train_evaluate_predict(tiny_config, sentiment_files, tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config = dict(tiny_config)
    config["train"] = {**tiny_config["train"], "epochs": 3}
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--output", str(run_dir), "--set", "train.epochs=1", "-q"]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 1  # --set wins
    capsys.readouterr()

    assert main(["evaluate", str(run_dir), "--data", str(sentiment_files["test"]), "-q"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "f1_macro" in metrics

    inputs = tmp_path / "in.jsonl"
    rows = ["great film", {"text": "awful meal"}, "superb", {"text": "dull", "label": "negative"}]
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run_dir), "--input", str(inputs), "--output", str(out), "-q"]) == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predictions) == len(rows)
    assert all(set(p) == {"label", "score"} for p in predictions)


def test_console_script_predicts_from_stdin(trained_run):
    result = subprocess.run(
        [sys.executable, "-m", "lccore.cli", "predict", str(trained_run.output_dir), "--input", "-", "-q"],
        input='"superb"\n"dreadful"\n', capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == ["positive", "negative"]
