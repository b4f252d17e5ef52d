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


def test_a_resumed_run_continues_its_tracker_runs_without_the_steps_logged_after_the_checkpoint(tiny_config, tmp_path, monkeypatch):
    """Killed at step 15 (checkpoint at 14) and resumed: one MLflow run, finished, and one
    TensorBoard series whose steps are metrics.json's, each once."""
    import subprocess
    import sys

    import yaml
    from conftest import make_distribution
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_resume import KILLER

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = copy.deepcopy(tiny_config)
    config["train"].update(epochs=3, checkpoint_every=2, report_to=["tensorboard", "mlflow"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    site = make_distribution(tmp_path / "site", "lccore-killer", {"lccore_killer": KILLER}, {"killer": "lccore_killer"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "KILL_AT_STEP": "15"}
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-m", "lccore", "train", str(path), "--output", str(out), "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode != 0 and (out / "checkpoints" / "step-00000014").is_dir(), killed.stderr[-2000:]
    store = f"sqlite:///{out / 'trackers' / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    [interrupted] = client.search_runs([e.experiment_id for e in client.search_experiments() if e.name == "run"])
    assert interrupted.info.status == "RUNNING"  # SIGKILL: nobody closed it

    run = lccore.train(str(path), out, progress=False, resume=True)
    steps = {row["step"]: row["loss"] for row in run.metrics["train"]}
    assert sorted(steps) == list(range(1, 31))
    [found] = client.search_runs([e.experiment_id for e in client.search_experiments() if e.name == "run"])
    assert found.info.run_id == interrupted.info.run_id and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert {m.step for m in history} == set(steps)  # steps 15 (logged, then lost with the session) and 16-30 once more
    assert all(m.value == pytest.approx(steps[m.step], rel=1e-6) for m in history)  # the same values: resume is exact

    events = EventAccumulator(str(out / "trackers" / "run"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == sorted(steps)  # step 15 of the killed session purged, no step twice
    assert [value for _, value in logged] == pytest.approx([steps[s] for s in sorted(steps)], rel=1e-6)
