"""train.report_to (issue 20): the run's config and metrics reach TensorBoard and MLflow through
Accelerate's trackers, read back here with each tool's own reader; metrics.json stays the record."""

import copy
import json
import os

import pytest

import lccore

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")


def test_tensorboard_and_mlflow_get_the_config_every_step_and_the_final_metrics(tiny_config, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # mlflow's own default store would land here: it must not
    config = copy.deepcopy(tiny_config)
    config["train"] = {**config.get("train", {}), "report_to": ["tensorboard", "mlflow"]}
    run = lccore.train(config, tmp_path / "tracked", progress=False)
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    losses = [row["loss"] for row in metrics["train"]]
    assert len(losses) >= 2

    events = EventAccumulator(str(run.output_dir / "trackers" / "tracked"))  # trackers/<run name>/
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [row["step"] for row in metrics["train"]]
    assert [value for _, value in logged] == pytest.approx(losses, rel=1e-6)
    assert [e.value for e in events.Scalars("dev/accuracy")] == pytest.approx([row["accuracy"] for row in metrics["dev"]])
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["test"]["after"]["accuracy"])

    store = f"sqlite:///{run.output_dir / 'trackers' / 'mlflow.db'}"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the store lccore chose was given back
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    [experiment] = [e for e in client.search_experiments() if e.name == "tracked"]
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "tracked"
    assert found.data.params["train.batch_size"] == str(config["train"].get("batch_size", 16))
    assert found.data.params["task.name"] == "text_classification"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses, rel=1e-6)
    assert found.data.metrics["test/accuracy"] == pytest.approx(metrics["test"]["after"]["accuracy"])


def test_an_unknown_or_missing_tracker_is_one_line(tiny_config, tmp_path):
    config = copy.deepcopy(tiny_config)
    config["train"] = {**config.get("train", {}), "report_to": ["tensorbord"]}
    with pytest.raises(lccore.ConfigError, match=r"train.report_to: unknown tracker 'tensorbord'; Accelerate's trackers: .*tensorboard"):
        lccore.train(config, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
