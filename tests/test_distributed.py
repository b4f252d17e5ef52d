"""FSDP2 (issue 20): `accelerate launch --config_file examples/distributed/fsdp2.yaml -m lccore train`
on two CPU processes (gloo). Accelerate (1.16) applies FSDP only on GPUs; lccore applies FSDP2 on
CPU processes itself (lccore.training.fsdp2_on_cpu), so this runs the sharded path on any machine."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_distribution
from test_resume import assert_same_weights, weights, without_dropout

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
              "whole": sum(p.numel() for p in params),
              "recomputes": any(getattr(m, "gradient_checkpointing", False) is True for m in run.model.modules()),
              "param_dtype": str(run.model._get_fsdp_state()._mp_policy.param_dtype) if isinstance(run.model, FSDPModule) else None}
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


def accelerate_fsdp2(config: Path, output: Path, *extra: str, env=None, timeout=300, accelerate_config=FSDP2_CONFIG) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config), "--main_process_port", str(free_port())]
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


def test_fsdp2_trains_as_one_process_and_its_sharded_checkpoints_resume_on_any_number_of_processes(fsdp2_setup, tmp_path):
    """Killed at step 23, a sharded run resumes from its shards under FSDP2 again and on one
    process; a one-process run resumes under FSDP2. Each ends where an uninterrupted one-process
    run does, step by step, and saves a plain Hugging Face model."""
    from transformers import AutoModelForSequenceClassification

    config, path, env = fsdp2_setup
    two = tmp_path / "two"
    killed = accelerate_fsdp2(path, two, env={**env, "KILL_AT_STEP": "23"})
    checkpoint = two / "checkpoints" / "step-00000020"
    assert killed.returncode != 0 and checkpoint.is_dir(), killed.stderr[-2000:]
    # examples/distributed/fsdp2.yaml asks for SHARDED_STATE_DICT: one safetensors file of slices per process, no whole model
    assert len(list((checkpoint / "shards").glob("*.safetensors"))) == 2 and not (checkpoint / "model.safetensors").exists()
    shutil.copytree(two, tmp_path / "two-then-one")
    result = accelerate_fsdp2(path, two, "--resume", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "data-parallel" not in result.stderr  # no "FSDP not applied" warning
    inspected = json.loads((tmp_path / "inspected.json").read_text())
    assert inspected["fsdp"] and inspected["sharded"]
    assert inspected["local"] < 0.6 * inspected["whole"]  # each process holds about half of the weights
    assert json.loads((two / "manifest.json").read_text())["processes"] == 2
    # 2 -> 2 is exact: the resumed sharded run ends with the weights of an uninterrupted one, bit for bit
    uninterrupted = accelerate_fsdp2(path, tmp_path / "two-uninterrupted", env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert_same_weights(two / "model", tmp_path / "two-uninterrupted" / "model")

    # 2 -> 1: the shards are read back whole by a single process
    lccore.train(config, tmp_path / "two-then-one", progress=False, resume=True)
    # 1 -> 2: a one-process checkpoint (whole tensors) is sharded on load; this launch gathers its checkpoints (FULL_STATE_DICT)
    one_then_two = tmp_path / "one-then-two"
    killed = subprocess.run([sys.executable, "-m", "lccore", "train", str(path), "--output", str(one_then_two), "-q"],
                            capture_output=True, text=True, timeout=300, env={**env, "KILL_AT_STEP": "23"})
    assert killed.returncode != 0 and (one_then_two / "checkpoints" / "step-00000020" / "model.safetensors").is_file(), killed.stderr[-2000:]
    gathering = tmp_path / "fsdp2-full.yaml"
    gathering.write_text(FSDP2_CONFIG.read_text().replace("SHARDED_STATE_DICT", "FULL_STATE_DICT"))
    result = accelerate_fsdp2(path, one_then_two, "--resume", env=env, accelerate_config=gathering)
    assert result.returncode == 0 and "written by 1 processes, continuing on 2" in result.stdout, result.stderr[-3000:]

    single = lccore.train(config, tmp_path / "one", progress=False)
    assert single.metrics["best"]["value"] == 1.0  # it learnt: the runs agree on a model that predicts, not a constant
    import torch

    expected = weights(single.model_dir)
    for run in (two, tmp_path / "two-then-one", one_then_two):
        metrics = json.loads((run / "metrics.json").read_text())
        assert len(metrics["train"]) == len(single.metrics["train"]) == 50, run
        # No dropout: every step's loss agrees up to float summation order, and so does every evaluation.
        for one, other in zip(single.metrics["train"] + single.metrics["dev"], metrics["train"] + metrics["dev"]):
            assert one["step"] == other["step"]
            assert one["loss"] == pytest.approx(other["loss"], rel=1e-3, abs=1e-4), (run, one["step"])
            assert one.get("accuracy") == other.get("accuracy")
        assert metrics["test"]["after"]["accuracy"] == single.metrics["test"]["after"]["accuracy"]
        # model/ is a plain Hugging Face folder with the whole (unsharded) weights of the 1-process run.
        got = weights(run / "model")
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-4, msg=f"{run.name}: {key}")
    plain = AutoModelForSequenceClassification.from_pretrained(two / "model")
    assert plain.bert.embeddings.word_embeddings.weight.shape == expected["bert.embeddings.word_embeddings.weight"].shape
    texts = ["a great film", "the plot was dull", "really awful acting"]
    assert [p["label"] for p in lccore.load(two).predict(texts)] == [p["label"] for p in lccore.load(single.output_dir).predict(texts)]


@pytest.mark.parametrize("trained", [
    {"lora": {"dropout": 0.0}},
    {"freeze": {"strategy": "top_k", "k": 1}},
    {"gradient_checkpointing": True, "mixed_precision": "bf16"},
], ids=["lora", "top_k", "checkpointing_bf16"])
def test_lora_freezing_and_memory_savers_under_fsdp2_train_as_one_process(fsdp2_setup, tmp_path, trained):
    """FSDP2 shards frozen and trained parameters alike; only the trained ones move, as in one
    process. Activations recomputed and bf16 autocast (FSDP2's MixedPrecisionPolicy) too."""
    import torch
    from safetensors.torch import load_file

    config, path, env = fsdp2_setup
    config["train"].update(trained, epochs=3, checkpoint_every=None)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = accelerate_fsdp2(path, tmp_path / "two", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    inspected = json.loads((tmp_path / "inspected.json").read_text())
    assert inspected["sharded"] and inspected["recomputes"] == ("gradient_checkpointing" in trained)
    assert inspected["param_dtype"] == ("torch.bfloat16" if "mixed_precision" in trained else "None")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    single = lccore.train(config, tmp_path / "one", progress=False)
    assert len(two["train"]) == len(single.metrics["train"]) == 30
    tolerance = {"rel": 2e-2, "abs": 1e-2} if trained.get("mixed_precision") == "bf16" else {"rel": 1e-3, "abs": 1e-4}  # bf16: 8 bits of mantissa
    for one, sharded in zip(single.metrics["train"], two["train"]):
        assert one["loss"] == pytest.approx(sharded["loss"], **tolerance), one["step"]

    if "lora" in trained:  # model/ is peft's adapter folder: the adapters and the head, not the base weights
        expected, got = load_file(single.model_dir / "adapter_model.safetensors"), load_file(tmp_path / "two" / "model" / "adapter_model.safetensors")
        assert any("lora_B" in name and got[name].abs().max() > 0 for name in got)  # lora_B starts at zero: the adapters trained
    elif "freeze" in trained:
        expected, got = weights(single.model_dir), weights(tmp_path / "two" / "model")
        original = weights(Path(config["model"]))
        frozen = [name for name in got if "embeddings" in name or "layer.0." in name]
        assert frozen and all(torch.equal(got[name], original[f"bert.{name.removeprefix('bert.')}"]) for name in frozen)
        assert not torch.equal(got["bert.encoder.layer.1.attention.self.query.weight"], original["bert.encoder.layer.1.attention.self.query.weight"])
    else:
        expected, got = weights(single.model_dir), weights(tmp_path / "two" / "model")
        assert got["classifier.weight"].dtype == torch.float32  # bf16 computes; the weights stay fp32
        assert single.metrics["best"]["value"] == two["best"]["value"]
        return
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-4, msg=name)


def test_a_deepspeed_config_is_refused_in_one_line_before_anything_is_written(tiny_config, tmp_path):
    """DeepSpeed's ZeRO partitions would be saved as if whole; lccore says so and points to FSDP2."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config), encoding="utf-8")
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true"}  # what `accelerate launch` sets for distributed_type: DEEPSPEED
    result = subprocess.run([sys.executable, "-m", "lccore", "train", str(path), "--output", str(tmp_path / "run"), "-q"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("lccore: error:") and len(result.stderr.strip().splitlines()) == 1
    assert "DeepSpeed" in result.stderr and "fsdp2.yaml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_masked_lm_pretraining_with_tied_weights_under_fsdp2_checkpoints_and_resumes_on_one_process(tmp_path):
    """BERT's masked-LM head ties two pairs of parameters (decoder weight = word embeddings, decoder
    bias = head bias), across Accelerate's FSDP2 groups; the corpus (613 lines) is not a multiple of
    the batch: each epoch has the same steps on two processes as on one."""
    import random

    import torch
    from transformers import AutoModelForMaskedLM

    rng = random.Random(0)
    words = "the a film plot actor scene was is great dull good bad long short story music".split()
    (tmp_path / "train.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) for _ in range(613)) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(40)) + "\n")
    config = {"model": {"architecture": "bert", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "vocab_size": 200},
              "task": {"name": "mlm", "train": str(tmp_path / "train.txt"), "dev": str(tmp_path / "dev.txt")},
              "optimizer": {"lr": 2e-3}, "train": {"epochs": 2, "batch_size": 32, "max_length": 32, "checkpoint_every": 5}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    site = make_distribution(tmp_path / "site", "lccore-inspector", {"lccore_inspector": INSPECTOR}, {"inspector": "lccore_inspector"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "INSPECT_TO": str(tmp_path / "inspected.json"), "KILL_AT_STEP": "7"}
    killed = accelerate_fsdp2(path, tmp_path / "two", env=env)
    assert killed.returncode != 0 and list((tmp_path / "two" / "checkpoints" / "step-00000005" / "shards").glob("*.safetensors")), killed.stderr[-3000:]
    assert json.loads((tmp_path / "inspected.json").read_text())["sharded"]

    resumed = lccore.train(str(path), tmp_path / "two", progress=False, resume=True)  # the shards, tied names and all, on one process
    single = lccore.train(str(path), tmp_path / "one", progress=False)
    assert [row["step"] for row in resumed.metrics["train"]] == [row["step"] for row in single.metrics["train"]]
    perplexities = [row["perplexity"] for row in resumed.metrics["dev"]]
    assert perplexities[-1] < 0.85 * perplexities[0]  # it learnt, as much as one process did (masks differ: each process draws its own)
    assert perplexities[-1] == pytest.approx(single.metrics["dev"][-1]["perplexity"], rel=0.1)
    model = AutoModelForMaskedLM.from_pretrained(resumed.model_dir)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(model.cls.predictions.bias, model.cls.predictions.decoder.bias)


def test_gradual_unfreezing_is_refused_under_fsdp2_with_the_reason(fsdp2_setup, tmp_path):
    config, path, env = fsdp2_setup
    config["train"]["freeze"] = {"strategy": "gradual"}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = accelerate_fsdp2(path, tmp_path / "run", env=env, timeout=120)
    assert result.returncode != 0
    assert "lccore: error: train.freeze.strategy: gradual unfreezing needs a single process (the trained parameters change per epoch)" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
