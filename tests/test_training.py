"""Training loop behaviour: early stopping, accumulation, seeding, precision, batching."""

from __future__ import annotations

import random

import pytest

import lccore
from lccore.batching import LengthGroupedBatchSampler, sorted_batches


def with_train(config: dict, **train) -> dict:
    return {**config, "train": {**config["train"], **train}}


def test_early_stopping_stops_and_keeps_the_best(tiny_config, tmp_path):
    # lr=0: the dev metric can never improve after the first evaluation
    config = with_train({**tiny_config, "optimizer": {"lr": 0.0}}, epochs=6, eval_every=3, early_stopping={"patience": 2})
    run = lccore.train(config, tmp_path / "run", progress=False)
    assert run.metrics["stopped_early"] is True
    assert [row["step"] for row in run.metrics["dev"]] == [3, 6, 9]
    assert run.metrics["best"]["step"] == 3
    assert run.metrics["train"][-1]["step"] == 9


def test_gradient_accumulation_counts_optimiser_steps(tiny_config, tmp_path):
    # 160 examples / batch 8 = 20 micro-batches per epoch, 2 per optimiser step
    run = lccore.train(with_train(tiny_config, epochs=1, batch_size=8, grad_accum=2), tmp_path / "run", progress=False)
    assert [row["step"] for row in run.metrics["train"]] == list(range(1, 11))


def test_same_seed_same_run(tiny_config, tmp_path):
    config = with_train(tiny_config, epochs=2)
    first = lccore.train(config, tmp_path / "a", progress=False).metrics
    second = lccore.train(config, tmp_path / "b", progress=False).metrics
    assert [r["loss"] for r in first["train"]] == [r["loss"] for r in second["train"]]
    third = lccore.train(with_train(config, seed=8), tmp_path / "c", progress=False).metrics
    assert [r["loss"] for r in first["train"]] != [r["loss"] for r in third["train"]]


def test_bf16_mixed_precision_trains_on_cpu(tiny_config, tmp_path):
    run = lccore.train(with_train(tiny_config, mixed_precision="bf16"), tmp_path / "run", progress=False)
    assert run.metrics["test"]["after"]["accuracy"] >= 0.8
    predictor = lccore.load(run.output_dir, precision="bf16")
    fp32 = lccore.load(run.output_dir)
    texts = ["superb film", "a dreadful book", "the meal was lovely", "really boring show"]
    assert [p["label"] for p in predictor.predict(texts)] == [p["label"] for p in fp32.predict(texts)]


def test_sgd_with_cosine_schedule_and_no_dev_set(tiny_config, tmp_path):
    config = {**tiny_config, "task": {k: v for k, v in tiny_config["task"].items() if k != "dev"}}
    config["optimizer"] = {"name": "sgd", "lr": 0.05, "schedule": "cosine", "warmup_ratio": 0.0}
    run = lccore.train(with_train(config, epochs=2), tmp_path / "run", progress=False)
    lrs = [row["lr"] for row in run.metrics["train"]]
    assert lrs[0] == pytest.approx(0.05, rel=0.05) and lrs[-1] < 0.01
    assert run.metrics["dev"] == [] and run.metrics["best"] is None
    assert (run.model_dir / "model.safetensors").exists()  # the final weights are the result
    assert "after" in run.metrics["test"]


def test_length_grouped_batches_cover_everything_with_less_padding():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1, group_by_length=False).batches()
    assert padding(batches) < 0.2 * padding(plain)
    assert sampler.batches() == batches  # same seed and epoch: same order
    sampler.set_epoch(1)
    assert sampler.batches() != batches


def test_sorted_batches_go_longest_first():
    lengths = [5, 50, 7, 30, 2]
    assert sorted_batches(lengths, 2) == [[1, 3], [2, 0], [4]]
