"""``optimizer.lr: auto``: the learning-rate range test, its pick, its picture, and a run that is
exactly the run its pick gives when stated outright (also after a resume, and on two processes)."""

from __future__ import annotations

import json
import math

import pytest
from test_data_cache import stop_at_step
from test_resume import assert_same_weights, train_on_two_processes, without_dropout

import lccore
from lccore import checkpoints, lr_find
from lccore.errors import ConfigError


def auto_config(tiny_config, steps: int = 10, **train) -> dict:
    """``lr: auto`` with a range test of ``steps`` steps; 10 training steps an epoch."""
    config = json.loads(json.dumps(tiny_config))
    config["optimizer"] = {"lr": "auto", "lr_find_steps": steps}
    config["train"].update({"epochs": 2, **train})
    return config


@pytest.mark.parametrize(("value", "message"), [
    ("fast", "optimizer.lr: expected a number or auto, got 'fast'"),
    ("atuo", "optimizer.lr: expected a number or auto, got 'atuo' (did you mean 'auto'?)"),
    ([1e-3], "optimizer.lr: expected a number or auto, got a list"),
    (True, "optimizer.lr: expected a number or auto, got True"),
    (-1e-3, "optimizer.lr: must be at least 0.0, got -0.001"),
])
def test_lr_is_a_number_or_auto_and_anything_else_is_one_line_naming_the_key(tiny_config, value, message):
    with pytest.raises(ConfigError) as caught:
        lccore.load_config({**tiny_config, "optimizer": {"lr": value}})
    assert str(caught.value) == f"config: {message}"
    assert lccore.load_config(tiny_config, ["optimizer.lr=auto"]).optimizer.lr == "auto"
    assert lccore.load_config(tiny_config, ["optimizer.lr=2e-4"]).optimizer.lr == 2e-4
    with pytest.raises(ConfigError, match=r"^config: optimizer.lr_find_steps: must be at least 10, got 3$"):
        lccore.load_config(tiny_config, ["optimizer.lr_find_steps=3"])


def test_the_pick_is_a_tenth_of_the_smoothed_minimum_and_a_flat_curve_keeps_the_default():
    lrs = lr_find.rates(60)
    assert lrs[0] == lr_find.START_LR and lrs[-1] == pytest.approx(lr_find.END_LR)
    # falls from 1e-4, lowest at 1e-2, then blows up (the last point diverged to inf)
    valley = [1.0 if lr < 1e-4 else 1.0 - 0.4 * math.log10(lr / 1e-4) if lr <= 1e-2 else 0.2 + 3 * math.log10(lr / 1e-2) for lr in lrs]
    valley[-1] = math.inf
    record = lr_find.pick(lrs, valley)
    assert record["method"] == "minimum/10" and record["steps"] == 60
    # within a factor of 2 (the smoothing pulls the minimum of a lopsided valley a step or two towards its gentler side)
    assert 1e-3 / 2 < record["lr"] < 1e-3 * 2 and record["lr"] == pytest.approx(record["minimum_lr"] / 10)
    assert 1e-4 < record["steepest_lr"] < 1e-2
    flat = lr_find.pick(lrs, [0.7 + 0.001 * (i % 2) for i in range(60)])
    assert flat["lr"] == lr_find.FALLBACK_LR and flat["method"].startswith("fallback: the loss never fell")


def test_the_range_test_stops_when_the_loss_diverges_and_puts_everything_back():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    inputs = torch.randn(64, 4)
    targets = inputs.sum(1, keepdim=True)

    class Regression(torch.nn.Module):  # a model called as the loop calls one: model(**batch)
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, y):
            return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}

    def batches():
        while True:
            for i in range(0, 64, 8):
                yield {"x": inputs[i:i + 8], "y": targets[i:i + 8]}

    regression = Regression().eval()  # the test trains in train mode (dropout on) and gives eval mode back
    state = torch.get_rng_state()
    record = lr_find.range_test(
        regression, lambda lr: torch.optim.SGD(model.parameters(), lr=lr), batches(), lambda outputs, batch: outputs["loss"],
        steps=100, grad_accum=2, max_grad_norm=None, device=torch.device("cpu"), autocast=lambda: torch.autocast("cpu", enabled=False),
    )
    assert record["steps"] < 100  # SGD at rates near 1 diverges: the test stopped early
    assert not math.isfinite(record["curve"]["loss"][-1]) or record["curve"]["loss"][-1] > 4 * min(record["curve"]["loss"])
    assert record["method"] == "minimum/10" and record["lr"] < 1.0
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert torch.equal(torch.get_rng_state(), state)


def test_auto_trains_exactly_as_the_picked_rate_stated_outright(tiny_config, tmp_path, capsys):
    # 40 steps: enough for the tiny model's loss to fall and turn up again (with fewer, it falls too late to pick from)
    auto = lccore.train(auto_config(tiny_config, steps=40, epochs=4), tmp_path / "auto")
    found = auto.metrics["lr_find"]
    assert found["method"] == "minimum/10" and found["steps"] == 40 and 1e-4 < found["lr"] < 1e-1
    assert f"lr auto: {found['lr']:.3g} (minimum/10, 40-step range test; lr_find.png)" in capsys.readouterr().out
    assert (tmp_path / "auto" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what was asked stays in config.yaml; the rate used is in the manifest and in every step's log
    assert lccore.load_config(tmp_path / "auto" / "config.yaml").optimizer.lr == "auto"
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["components"]["optimizer"]["lr"] == found["lr"]
    assert manifest["components"]["optimizer"]["lr_find"] == {"lr": found["lr"], "method": "minimum/10", "steps": 40}
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["lr_find"]["lr"] == found["lr"]

    config = auto_config(tiny_config, epochs=4)
    config["optimizer"] = {"lr": found["lr"]}
    stated = lccore.train(config, tmp_path / "stated", progress=False)
    assert stated.metrics["train"] == auto.metrics["train"] and stated.metrics["dev"] == auto.metrics["dev"]
    assert stated.metrics["test"] == auto.metrics["test"]
    assert_same_weights(tmp_path / "auto" / "model", tmp_path / "stated" / "model")
    assert not (tmp_path / "stated" / "lr_find.png").exists() and "lr_find" not in stated.metrics


def test_a_resumed_auto_run_keeps_its_pick_without_testing_again(tiny_config, tmp_path, monkeypatch):
    config = auto_config(tiny_config, checkpoint_every=4)
    whole = lccore.train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        lccore.train(config, tmp_path / "cut", progress=False, engine=lccore.Engine(plugins=[stop_at_step(13)]))
    assert checkpoints.checkpoint_dirs(tmp_path / "cut")[0].name == "step-00000012"

    def no_second_test(*args, **kwargs):
        raise AssertionError("the range test ran again on resume")

    monkeypatch.setattr(lr_find, "range_test", no_second_test)
    resumed = lccore.train(config, tmp_path / "cut", progress=False, resume=True)
    assert resumed.metrics["lr_find"] == whole.metrics["lr_find"]
    assert resumed.metrics["train"] == whole.metrics["train"] and resumed.metrics["dev"] == whole.metrics["dev"]
    assert_same_weights(tmp_path / "whole" / "model", tmp_path / "cut" / "model")


def test_a_run_too_short_for_a_range_test_is_refused_in_one_line(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^optimizer.lr: auto needs a range test of at least 10 steps, and this run has 4 optimiser steps: give a rate$"):
        lccore.train(auto_config(tiny_config, max_steps=4), tmp_path / "short", progress=False)


def test_two_processes_pick_the_rate_one_process_picks(tiny_config, tmp_path):
    """The main process runs the test on whole global batches and sends the pick to the others."""
    config = auto_config(tiny_config, epochs=1)
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")
    train_on_two_processes(config, tmp_path / "two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = lccore.train(config, tmp_path / "one", progress=False)
    assert two["lr_find"]["lr"] == one.metrics["lr_find"]["lr"]
    assert [row["lr"] for row in two["train"]] == [row["lr"] for row in one.metrics["train"]]
    for a, b in zip(one.metrics["train"], two["train"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-4)
