"""FSDP2 (issue 20): `accelerate launch --config_file examples/distributed/fsdp2.yaml -m lccore train`
on two CPU processes (gloo). Accelerate (1.16) applies FSDP only on GPUs; lccore applies FSDP2 on
CPU processes itself (lccore.training.fsdp2_on_cpu), so this runs the sharded path on any machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_distribution
from test_resume import weights, without_dropout

import lccore

FSDP2_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "distributed" / "fsdp2.yaml"

# What the run's model is once prepared (main process): FSDP2 turns its parameters into shards.
INSPECTOR = """
import json, os, signal
import lccore

@lccore.hookimpl
def on_train_start(run):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    params = list(run.model.parameters())
    report = {"fsdp": isinstance(run.model, FSDPModule), "sharded": all(isinstance(p, DTensor) for p in params),
              "local": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
              "whole": sum(p.numel() for p in params)}
    with open(os.environ["INSPECT_TO"], "w") as handle:
        json.dump(report, handle)

@lccore.hookimpl
def on_train_step(run, step, logs):
    if step == int(os.environ.get("KILL_AT_STEP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_fsdp2(config: Path, output: Path, *extra: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP2_CONFIG), "--main_process_port", str(free_port())]
    return subprocess.run([*launcher, "-m", "lccore", "train", str(config), "--output", str(output), "-q", *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def fsdp2_setup(tiny_config, tmp_path):
    config = json.loads(json.dumps(tiny_config))
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")  # dropout masks depend on the batch split
    config["train"].update(epochs=5, checkpoint_every=4)  # learns by epoch 4; step checkpoints are written from gathered state
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    site = make_distribution(tmp_path / "site", "lccore-inspector", {"lccore_inspector": INSPECTOR}, {"inspector": "lccore_inspector"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "INSPECT_TO": str(tmp_path / "inspected.json")}
    return config, path, env


def test_fsdp2_on_two_cpu_processes_trains_as_one_process_resumes_and_saves_a_whole_model(fsdp2_setup, tmp_path):
    """Killed at step 23 and resumed (under FSDP2 again) from a checkpoint written from gathered
    state, the sharded run ends where a one-process run does, step by step."""
    from transformers import AutoModelForSequenceClassification

    config, path, env = fsdp2_setup
    killed = accelerate_fsdp2(path, tmp_path / "two", env={**env, "KILL_AT_STEP": "23"})
    assert killed.returncode != 0 and (tmp_path / "two" / "checkpoints" / "step-00000020").is_dir(), killed.stderr[-2000:]
    result = accelerate_fsdp2(path, tmp_path / "two", "--resume", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "data-parallel" not in result.stderr  # no "FSDP not applied" warning
    inspected = json.loads((tmp_path / "inspected.json").read_text())
    assert inspected["fsdp"] and inspected["sharded"]
    assert inspected["local"] < 0.6 * inspected["whole"]  # each process holds about half of the weights
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2

    single = lccore.train(config, tmp_path / "one", progress=False)
    assert len(two["train"]) == len(single.metrics["train"]) == 50
    assert single.metrics["best"]["value"] == 1.0  # it learnt: the runs agree on a model that predicts, not a constant
    # No dropout: every step's loss agrees up to float summation order, and so does every evaluation.
    for one, sharded in zip(single.metrics["train"] + single.metrics["dev"], two["train"] + two["dev"]):
        assert one["step"] == sharded["step"]
        assert one["loss"] == pytest.approx(sharded["loss"], rel=1e-3, abs=1e-4)
        assert one.get("accuracy") == sharded.get("accuracy")
    assert two["test"]["after"]["accuracy"] == single.metrics["test"]["after"]["accuracy"]

    # model/ is a plain Hugging Face folder with the whole (unsharded) weights of the 1-process run.
    import torch

    expected, got = weights(single.model_dir), weights(tmp_path / "two" / "model")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-4, msg=key)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two" / "model")
    assert plain.bert.embeddings.word_embeddings.weight.shape == expected["bert.embeddings.word_embeddings.weight"].shape
    texts = ["a great film", "the plot was dull", "really awful acting"]
    assert [p["label"] for p in lccore.load(tmp_path / "two").predict(texts)] == [p["label"] for p in lccore.load(single.output_dir).predict(texts)]
