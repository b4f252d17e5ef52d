"""Fault tolerance: checkpoints, exact resume after SIGKILL, damaged checkpoints, a diverging loss,
and data-parallel training in two processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_distribution, sentiment_rows, write_jsonl

import lccore
from lccore import checkpoints

# A third-party plugin that kills its own process (SIGKILL: no cleanup, no atexit) after a step.
KILLER = """
import os, signal
import lccore

@lccore.hookimpl
def on_train_step(run, step, logs):
    if step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def lccore_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lccore", *args], capture_output=True, text=True, timeout=timeout, env=env)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [name for name in wa if not torch.equal(wa[name], wb[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def resume_config(tiny_config, tmp_path_factory) -> Path:
    config = json.loads(json.dumps(tiny_config))
    # Three epochs of 10 steps; dropout stays on, so the random-number state must be restored too.
    config["train"].update(epochs=3, checkpoint_every=2, keep_checkpoints=2)
    path = tmp_path_factory.mktemp("resume") / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(resume_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = lccore_cli("train", str(resume_config), "--output", str(out), "-q")
    assert result.returncode == 0, result.stderr
    return out


def test_killed_run_resumes_to_the_same_weights_even_past_a_damaged_checkpoint(resume_config, uninterrupted, tmp_path):
    site = make_distribution(tmp_path / "site", "lccore-killer", {"lccore_killer": KILLER}, {"killer": "lccore_killer"})
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "KILL_AT_STEP": "15"}
    killed = lccore_cli("train", str(resume_config), "--output", str(out), "-q", env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "manifest.json").exists()
    assert [p.name for p in checkpoints.checkpoint_dirs(out)] == ["step-00000014", "step-00000012"]  # keep_checkpoints: 2

    # The newest checkpoint is damaged (as by a disk filling up): resume must notice and use step 12, in the middle of epoch 2.
    damaged = out / "checkpoints" / "step-00000014" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])

    resumed = lccore_cli("train", str(resume_config), "--output", str(out), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "step-00000014 is damaged (model.safetensors does not match its SHA-256" in resumed.stderr
    assert "resuming from" in resumed.stdout and "step-00000012" in resumed.stdout

    assert_same_weights(uninterrupted / "model", out / "model")
    ours, theirs = (json.loads((run / "metrics.json").read_text()) for run in (out, uninterrupted))
    assert [row["loss"] for row in ours["train"]] == [row["loss"] for row in theirs["train"]]
    assert ours["dev"] == theirs["dev"] and ours["test"] == theirs["test"]
    assert not (out / "checkpoints").exists()  # a finished run keeps its best model, not its checkpoints
    # wall time: the uninterrupted run took one session; the resumed one adds its time to what the
    # killed session had spent up to the checkpoint it resumed from
    assert theirs["time"]["sessions"] == 1 and theirs["time"]["seconds"] > 0
    assert ours["time"]["sessions"] == 2 and ours["time"]["seconds"] > 0


def test_resume_refuses_a_changed_config_and_a_finished_run(resume_config, uninterrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    (out / "manifest.json").unlink()  # as if killed before the end
    changed = lccore_cli("train", str(resume_config), "--output", str(out), "--resume", "--set", "optimizer.lr=0.1")
    assert changed.returncode == 2
    assert "optimizer.lr: 0.003 then, 0.1 now" in changed.stderr and "Traceback" not in changed.stderr

    finished = lccore_cli("train", str(resume_config), "--output", str(uninterrupted), "--resume")
    assert finished.returncode == 2 and "already finished" in finished.stderr


class NaNAfter:
    """A head plugin whose loss turns NaN at a given call, like a diverging run."""

    def __init__(self, calls: int):
        self.calls = calls

    @lccore.hookimpl
    def register_heads(self, register):
        from lccore_text_classification.head import SequenceClassifierHead

        calls = self.calls

        class Diverging(SequenceClassifierHead):
            seen = 0

            def loss(self, outputs, batch):
                import torch

                Diverging.seen += torch.is_grad_enabled()  # training steps only, not evaluation
                return outputs.loss * float("nan") if Diverging.seen >= calls else outputs.loss

        register("diverging", Diverging)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    config = json.loads(json.dumps(tiny_config))
    config["head"] = "diverging"
    config["train"].update(epochs=2, checkpoint_every=3)
    with pytest.raises(lccore.LccoreError, match=r"training loss became nan at step 8 \(epoch 1\); the last good checkpoint is .*step-00000006"):
        lccore.train(config, tmp_path / "run", engine=lccore.Engine(plugins=[NaNAfter(calls=8)]), progress=False)
    newest = checkpoints.newest_intact(tmp_path / "run", warn=pytest.fail)
    assert newest.name == "step-00000006"

    # Any file of a checkpoint cut short by one byte makes it damaged.
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "loop.json", "rng-0.json"):
        copy = tmp_path / f"copy-{name}"
        shutil.copytree(newest, copy)
        (copy / name).write_bytes((copy / name).read_bytes()[:-1])
        assert name in checkpoints.problem(copy)


def test_two_processes_match_one_and_count_every_example_once(tiny_config, tmp_path):
    config = json.loads(json.dumps(tiny_config))
    config["train"].update(epochs=4, report_to=["tensorboard"], gradient_checkpointing=True)  # both fine under DDP
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")
    # An odd number of test examples: sharding over two processes must not pad or drop any.
    config["task"]["test"] = str(write_jsonl(tmp_path / "test.jsonl", sentiment_rows(37, seed=5)))
    train_on_two_processes(config, tmp_path / "two")
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2
    # only the main process logs: one event file, one value per optimiser step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((tmp_path / "two" / "trackers" / "two").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path / "two" / "trackers" / "two"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [row["step"] for row in json.loads((tmp_path / "two" / "metrics.json").read_text())["train"]]

    single = lccore.train(config, tmp_path / "one", progress=False)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # Without dropout (whose masks depend on how the batch is split) the runs agree up to float
    # summation order: each process computes half of every batch, as one process did the whole.
    for one, two_processes in zip(single.metrics["train"] + single.metrics["dev"], two["train"] + two["dev"]):
        assert one["loss"] == pytest.approx(two_processes["loss"], rel=1e-3, abs=1e-4)
        assert one.get("accuracy") == two_processes.get("accuracy")
    # Scoring the saved model in one process gives exactly what the two processes reported
    # between them: no example dropped, none counted twice.
    again = lccore.load(tmp_path / "two").evaluate(config["task"]["test"])
    assert again["loss"] == pytest.approx(two["test"]["after"]["loss"], rel=1e-5)
    assert again["accuracy"] == two["test"]["after"]["accuracy"]


def train_on_two_processes(config: dict, output: Path) -> subprocess.CompletedProcess:
    """`lccore train` of ``config`` under torchrun with 2 processes (= `torchrun`, as docs/ say), into
    ``output``; the config is written beside it. Fails the test when the run fails."""
    path = output.with_name(output.name + "-config.yaml")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lccore"]
    result = subprocess.run([*launcher, "train", str(path), "--output", str(output), "-q"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def without_dropout(model: str, copy: Path) -> str:
    shutil.copytree(model, copy)
    settings = json.loads((copy / "config.json").read_text())
    settings.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (copy / "config.json").write_text(json.dumps(settings))
    return str(copy)


# --- a step budget (train.max_steps) -------------------------------------------------------------


def budget_config(tiny_config, tmp_path, **train) -> Path:
    config = json.loads(json.dumps(tiny_config))
    config["train"].update(epochs=1, **train)  # epochs is ignored under a budget
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_step_budget_ends_mid_epoch_and_the_schedule_decays_over_it(tiny_config, tmp_path):
    # 160 examples at batch 16: 10 steps an epoch; 25 steps end in the middle of the third epoch.
    run = lccore.train(budget_config(tiny_config, tmp_path, max_steps=25, eval_every=10), tmp_path / "run", progress=False)
    steps = run.metrics["train"]
    assert [row["step"] for row in steps] == list(range(1, 26))
    assert [row["epoch"] for row in steps][-1] == 3 and [row["epoch"] for row in steps].count(3) == 5
    assert steps[-1]["lr"] == 0.0 and steps[-2]["lr"] > 0  # the linear decay reaches 0 at the budget's last step
    assert [row["step"] for row in run.metrics["dev"]] == [10, 20, 25]  # the last steps are evaluated too
    assert run.config.train.max_steps == 25  # recorded in the resolved config


def test_a_killed_budgeted_run_resumes_to_the_same_weights(tiny_config, tmp_path):
    config = budget_config(tiny_config, tmp_path, max_steps=17, checkpoint_every=3)
    straight = tmp_path / "straight"
    assert lccore_cli("train", str(config), "--output", str(straight), "-q").returncode == 0
    site = make_distribution(tmp_path / "site", "lccore-killer", {"lccore_killer": KILLER}, {"killer": "lccore_killer"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "KILL_AT_STEP": "13"}
    out = tmp_path / "run"
    assert lccore_cli("train", str(config), "--output", str(out), "-q", env=env).returncode == -signal.SIGKILL
    assert checkpoints.checkpoint_dirs(out)[0].name == "step-00000012"  # mid-epoch 2
    resumed = lccore_cli("train", str(config), "--output", str(out), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(straight / "model", out / "model")
    ran = json.loads((out / "metrics.json").read_text())["train"]
    assert [row["step"] for row in ran] == list(range(1, 18))
    assert ran == json.loads((straight / "metrics.json").read_text())["train"]


def test_a_run_resumes_on_another_number_of_processes(tiny_config, tmp_path):
    """Issue 20: a run checkpointed by 2 processes finishes on 1, and one checkpointed by 1 on 2,
    with the weights of an uninterrupted run (within float summation order; no dropout)."""
    import torch

    config = json.loads(json.dumps(tiny_config))
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")
    config["train"].update(epochs=1, max_steps=12, checkpoint_every=4)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lccore"]
    single = [sys.executable, "-m", "lccore"]
    straight = lccore.train(config, tmp_path / "straight", progress=False)
    site = make_distribution(tmp_path / "site", "lccore-killer", {"lccore_killer": KILLER}, {"killer": "lccore_killer"})
    killing = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "KILL_AT_STEP": "9"}
    for first, then, name in ((torchrun, single, "two-then-one"), (single, torchrun, "one-then-two")):
        out = tmp_path / name
        killed = subprocess.run([*first, "train", str(path), "--output", str(out), "-q"], capture_output=True, text=True, timeout=600, env=killing)
        assert killed.returncode != 0 and (out / "checkpoints" / "step-00000008").is_dir(), killed.stderr[-2000:]
        resumed = subprocess.run([*then, "train", str(path), "--output", str(out), "--resume"], capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        processes = (2, 1) if first is torchrun else (1, 2)
        assert f"written by {processes[0]} processes, continuing on {processes[1]}" in resumed.stdout
        metrics = json.loads((out / "metrics.json").read_text())
        assert [row["step"] for row in metrics["train"]] == list(range(1, 13))
        assert [row["loss"] for row in metrics["train"]] == pytest.approx([row["loss"] for row in straight.metrics["train"]], rel=1e-3, abs=1e-4)
        expected, got = weights(straight.output_dir / "model"), weights(out / "model")
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-4, msg=f"{name}: {key}")
