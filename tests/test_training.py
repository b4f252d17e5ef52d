"""Training loop behaviour: early stopping, accumulation, seeding, precision, batching."""

from __future__ import annotations

import json
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


def test_auto_precision_measures_then_keeps_bf16_only_when_faster_and_in_agreement(trained_run, monkeypatch, capsys, tmp_path):
    import torch

    from lccore import precision

    texts = [f"{word} film number {i}" for i, word in enumerate(["superb", "dreadful", "lovely", "boring"] * 40)]
    fp32 = lccore.load(trained_run.output_dir).predict(texts)
    bf16 = lccore.load(trained_run.output_dir, precision="bf16").predict(texts)
    small = lccore.load(trained_run.output_dir, precision="auto")
    assert small.predict(texts[:10]) == fp32[:10]
    assert small.precision_choice == {"chosen": "fp32", "measured_on": 0, "reason": "10 inputs, fewer than 128: not worth measuring"}  # said, not silent
    small.predict(texts)
    assert small.precision_choice["measured_on"] == 64  # a larger call still measures
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 0.0)
    chosen = lccore.load(trained_run.output_dir, precision="auto")
    assert chosen.predict(texts) == bf16 and chosen.autocast_dtype == torch.bfloat16
    assert chosen.precision_choice["chosen"] == "bf16" and chosen.precision_choice["measured_on"] == 64
    assert 0.0 <= chosen.precision_choice["agreement"] <= 1.0 and chosen.precision_choice["bf16_speedup"] > 0
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 1.01)  # bf16 can never agree enough
    refused = lccore.load(trained_run.output_dir, precision="auto")
    assert refused.predict(texts) == fp32 and refused.precision_choice["chosen"] == "fp32" and refused.autocast_dtype is None
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'"{t}"\n' for t in texts))
    from lccore.cli import main

    assert main(["predict", str(trained_run.output_dir), "--input", str(source), "--precision", "auto", "-q"]) == 0
    assert "precision auto: fp32 (bf16 " in capsys.readouterr().err  # said under --quiet too
    source.write_text("".join(f'"{t}"\n' for t in texts[:5]))
    assert main(["predict", str(trained_run.output_dir), "--input", str(source), "--precision", "auto", "-q"]) == 0
    assert "precision auto: fp32 (5 inputs, fewer than 128: not worth measuring)" in capsys.readouterr().err


def test_auto_mixed_precision_measures_once_and_trains_exactly_as_its_choice(tiny_config, tmp_path, monkeypatch):
    from lccore import precision

    config = with_train(tiny_config, epochs=1)
    short = lccore.train(with_train(config, mixed_precision="auto"), tmp_path / "short", progress=False)
    assert short.metrics["precision"]["chosen"] == "fp32" and "too few" in short.metrics["precision"]["reason"]
    monkeypatch.setattr(precision, "MIN_TRAINING_STEPS", 1)
    runs = {}
    for name, speedup in (("bf16", 0.0), ("fp32", 1e9)):  # whatever the machine: force each outcome
        monkeypatch.setattr(precision, "MIN_SPEEDUP", speedup)
        monkeypatch.setattr(precision, "MIN_GRADIENT_COSINE", -1.0)
        monkeypatch.setattr(precision, "MAX_LOSS_DIFFERENCE", float("inf"))
        runs[name] = lccore.train(with_train(config, mixed_precision="auto"), tmp_path / f"auto-{name}", progress=False)
        choice = runs[name].metrics["precision"]
        assert choice["chosen"] == name and choice["measured_batches"] == 2
        assert -1.0 <= choice["gradient_cosine"] <= 1.0 and choice["bf16_speedup"] > 0
    # The measurement leaves no trace: the same losses as a run told the precision outright.
    fixed = {name: lccore.train(with_train(config, mixed_precision=setting), tmp_path / f"fixed-{name}", progress=False)
             for name, setting in (("bf16", "bf16"), ("fp32", "no"))}
    for name in ("bf16", "fp32"):
        assert [r["loss"] for r in runs[name].metrics["train"]] == [r["loss"] for r in fixed[name].metrics["train"]]
    assert [r["loss"] for r in runs["bf16"].metrics["train"]] != [r["loss"] for r in runs["fp32"].metrics["train"]]
    assert lccore.load_config(runs["bf16"].output_dir / "config.yaml").train.mixed_precision == "auto"


def test_a_resumed_auto_precision_run_keeps_its_first_choice(tmp_path):
    import json

    from lccore.training import measured_precision

    earlier = {"chosen": "bf16", "reason": "measured when the run started"}
    (tmp_path / "loop.json").write_text(json.dumps({"metrics": {"precision": earlier}}))
    assert measured_precision(None, None, iter(()), tmp_path, None, total_batches=10_000) == earlier


def test_prediction_agreement_allows_float_noise_only():
    from lccore.precision import agrees as _agrees

    record = {"label": "positive", "score": 0.91, "scores": {"positive": 0.91, "negative": 0.09}}
    assert _agrees(record, {**record, "score": 0.93, "scores": {"positive": 0.93, "negative": 0.07}})
    assert not _agrees(record, {**record, "label": "negative"})
    assert not _agrees(record, {**record, "score": 0.8})
    assert _agrees({"perplexity": 100.0}, {"perplexity": 103.0}) and not _agrees({"perplexity": 100.0}, {"perplexity": 110.0})
    assert not _agrees({"entities": [{"text": "Bob"}]}, {"entities": []})


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
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler)
    # the short batch last: Accelerate, splitting batches between processes, would skip it anywhere else
    assert len(batches[-1]) == 1000 % 16 and all(len(b) == 16 for b in batches[:-1])

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = list(LengthGroupedBatchSampler(lengths, batch_size=16, seed=1, group_by_length=False))
    assert padding(batches) < 0.2 * padding(plain)
    # smaller pools: batches less alike, more padding (benchmarks/defaults.py measures what that buys)
    assert padding(batches) < padding(LengthGroupedBatchSampler(lengths, batch_size=16, seed=1, pool_batches=4)) < 0.4 * padding(plain)
    assert list(sampler) == batches  # same seed and epoch: same order
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sorted_batches_go_longest_first():
    lengths = [5, 50, 7, 30, 2]
    assert sorted_batches(lengths, 2) == [[1, 3], [2, 0], [4]]


def test_a_split_may_be_several_files_a_glob_or_a_list(tiny_config, tmp_path):
    import json

    import yaml

    from conftest import sentiment_rows, write_jsonl

    rows = sentiment_rows(160, seed=1)
    (tmp_path / "shards").mkdir()
    for i in range(4):
        write_jsonl(tmp_path / "shards" / f"part-{i}.jsonl", rows[i * 40 : (i + 1) * 40])
    config = {**tiny_config, "task": {**tiny_config["task"], "train": ["shards/part-0.jsonl", "shards/part-[123].jsonl"], "dev": "shards/*-3.jsonl"},
              "train": {**tiny_config["train"], "epochs": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    run = lccore.train(tmp_path / "cfg.yaml", tmp_path / "run", progress=False)
    manifest = json.loads((run.output_dir / "manifest.json").read_text())
    shards = [str(tmp_path / "shards" / f"part-{i}.jsonl") for i in range(4)]
    assert manifest["data"]["train"]["path"] == shards and manifest["data"]["train"]["examples"] == 160
    assert manifest["data"]["dev"]["path"] == [shards[3]]  # a glob is recorded as the files it matched
    assert lccore.load_config(run.output_dir / "config.yaml").task.train == shards
    assert [row["step"] for row in run.metrics["train"]] == list(range(1, 11))  # 160 examples, batch 16

    config["task"]["train"] = ["shards/part-0.jsonl", "corpus/*.txt"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(lccore.ConfigError, match=r"cfg\.yaml: task\.train: corpus/\*\.txt matches no file"):
        lccore.load_config(tmp_path / "cfg.yaml")


def test_loading_and_saving_a_model_from_python_draws_no_transformers_bars(trained_run, tiny_config, tmp_path, capfd):
    """A program that calls lccore.load sees its own output, not transformers' "Loading weights" bar per load."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh program (a CLI test in this process may have turned them off)
    capfd.readouterr()
    predictor = lccore.load(trained_run.output_dir)
    from lccore.rundir import save_model_atomically

    save_model_atomically(predictor.model, predictor.tokenizer, tmp_path)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    # nor when a program trains: a head put on a model is reported MISSING by transformers, which is expected
    lccore.train({**tiny_config, "train": {**tiny_config["train"], "max_steps": 1}}, tmp_path / "run", progress=False)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "Writing model shards" not in err and "Loading weights" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # the caller's own setting is given back


# --- under-training: the end-of-run diagnosis (issue 23) ----------------------------------------------


def curve(losses):
    return [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]


def test_a_loss_still_falling_steeply_at_the_end_is_called_under_trained():
    from lccore.diagnosis import under_training

    falling = {"train": curve([1.0 - 0.02 * i for i in range(40)]), "dev": []}
    found = under_training(falling, epochs=3, max_steps=None, schedule="linear")
    assert "still falling steeply" in found["reasons"][0] and "train.epochs: 6" in found["advice"] and "optimizer.schedule: wsd" in found["advice"]
    assert "train.max_steps: 800" in under_training(falling, epochs=3, max_steps=400, schedule="constant")["advice"]
    flat = {"train": curve([0.3 + 0.01 * (i % 3) for i in range(40)])}
    assert under_training(flat, epochs=3, max_steps=None, schedule="linear") is None
    # near zero, a loss halves by noise: not a sign
    converged = {"train": curve([2.0] * 4 + [0.004] * 32 + [0.002] * 4)}
    assert under_training(converged, epochs=3, max_steps=None, schedule="linear") is None
    assert under_training({"train": curve([1.0 - 0.05 * i for i in range(10)])}, epochs=3, max_steps=None, schedule="linear") is None  # too short to judge


def test_a_dev_metric_still_improving_at_the_last_evaluation_is_called_under_trained():
    from lccore.diagnosis import under_training

    flat = curve([0.3] * 30)
    rising = {"train": flat, "dev": [{"step": 10, "accuracy": 0.6}, {"step": 20, "accuracy": 0.7}],
              "best": {"step": 20, "metric": "accuracy", "value": 0.7}}
    assert "dev accuracy was still improving" in under_training(rising, epochs=2, max_steps=None, schedule="linear")["reasons"][0]
    peaked = {**rising, "best": {"step": 10, "metric": "accuracy", "value": 0.6}}
    assert under_training(peaked, epochs=2, max_steps=None, schedule="linear") is None
    assert under_training({**rising, "stopped_early": True}, epochs=2, max_steps=None, schedule="linear") is None


def test_the_run_records_and_the_summary_says_when_the_model_looks_under_trained(tiny_config, trained_run, tmp_path):
    from lccore.cli import summary

    # At a constant rate the tiny model learns the task in epochs 4 and 5: stopped after 5 its loss
    # is still falling fast. trained_run (10 epochs, linear decay) has converged: loss 0.01, dev flat.
    short = {**tiny_config, "task": {k: v for k, v in tiny_config["task"].items() if k != "dev"},
             "optimizer": {**tiny_config["optimizer"], "schedule": "constant", "warmup_ratio": 0.0}, "train": {**tiny_config["train"], "epochs": 5}}
    run = lccore.train(short, tmp_path / "short", progress=False)
    recorded = json.loads((tmp_path / "short" / "metrics.json").read_text())["under_trained"]
    assert recorded and "still falling steeply" in recorded["reasons"][0], [round(r["loss"], 3) for r in run.metrics["train"]]
    text = summary(run)
    assert "warning: the model looks under-trained: the training loss was still falling" in text and "train.epochs: 10" in text
    assert trained_run.metrics["under_trained"] is None and "under-trained" not in summary(trained_run)


@pytest.mark.parametrize("schedule, theirs, options", [
    ("linear", "linear", None), ("cosine", "cosine", None), ("constant", "constant_with_warmup", None),
    ("wsd", "warmup_stable_decay", {"num_decay_steps": 9, "decay_type": "linear"}),
])
def test_the_learning_rate_schedules_are_transformers_own_step_for_step(schedule, theirs, options):
    # lccore builds its schedules on torch (transformers' get_scheduler imports peft: seconds a process);
    # the rates must stay transformers', so a checkpoint written under either resumes under the other
    import torch
    from transformers import get_scheduler

    from lccore.training import lr_schedule

    ours_optimizer, their_optimizer = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1) for _ in range(2))
    ours = lr_schedule(ours_optimizer, schedule, warmup=7, total=50, decay=9)
    their = get_scheduler(theirs, their_optimizer, num_warmup_steps=7, num_training_steps=50, scheduler_specific_kwargs=options)
    for _ in range(55):
        assert ours.get_last_lr()[0] == pytest.approx(their.get_last_lr()[0], abs=1e-12)
        ours_optimizer.step(), their_optimizer.step(), ours.step(), their.step()
    their.load_state_dict(ours.state_dict())  # the saved state is the same shape


def test_warmup_stable_decay_holds_the_rate_then_decays_to_zero_over_the_last_steps():
    import torch

    from lccore.training import lr_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, "wsd", warmup=2, total=20, decay=5)
    rates = []
    for _ in range(20):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step(), schedule.step()
    assert rates[:3] == [0.0, 0.5, 1.0] and set(rates[2:15]) == {1.0}  # warmup, then the peak held
    assert rates[15:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # the last 5 steps decay linearly towards 0
