"""``optimizer.lr: auto``: a learning-rate range test before training (Smith, "Cyclical Learning
Rates", 2015; fastai's ``lr_find``, Lightning's ``Tuner.lr_find``).

The run's own optimiser trains on its first batches while the rate grows exponentially from
:data:`START_LR` to :data:`END_LR`; the test stops early once the loss diverges. The pick is a
tenth of the rate at the smoothed loss's minimum (fastai's ``lr_min``): on a curve of a few dozen
noisy steps the minimum is the steadiest feature (the steepest slope, Lightning's suggestion, moves
with each batch's noise and is recorded beside it), and a tenth keeps the schedule's peak well
below the rates at which the loss turns up. The model, the random generators and (since the test
reads its own copy of the batches and its optimiser is thrown away) the data order and the
optimiser are left as they were, so the run that follows is the run an explicit ``lr`` gives.
"""

from __future__ import annotations

import math
from pathlib import Path

START_LR, END_LR = 1e-7, 1.0
#: The test stops once the smoothed loss is this many times its best (fastai, Lightning: 4).
DIVERGED = 4.0
#: The divergence check's exponential smoothing (about ten steps: 0.98, fastai's, lags by 50).
EMA_BETA = 0.9
#: The loss must fall by this share of where it started, or the test found no rate that helps.
MIN_FALL = 0.02
#: Fewer steps than this resolve too little of the range to pick from.
MIN_STEPS = 10
#: The rate kept when the loss never fell (OptimizerConfig's default).
FALLBACK_LR = 5e-5
PICTURE_FILE = "lr_find.png"


def rates(steps: int) -> list[float]:
    """``steps`` rates, evenly spaced on a log scale from :data:`START_LR` to :data:`END_LR`."""
    ratio = END_LR / START_LR
    return [START_LR * ratio ** (i / max(steps - 1, 1)) for i in range(steps)]


def range_test(model, make_optimizer, batches, loss_of, *, steps: int, grad_accum: int, max_grad_norm: float | None,
               device, autocast, progress: bool = False) -> dict:
    """Train ``model`` for up to ``steps`` optimiser steps (``grad_accum`` batches each, from the
    iterator ``batches``) on an optimiser from ``make_optimizer(1.0)`` whose groups' rates (their
    ratios kept, as ``layer_lr_decay`` sets them) are scaled by a rate rising from
    :data:`START_LR` to :data:`END_LR`; then put the weights, gradients, train/eval mode and the
    random generators back as they were. Returns the record ``metrics.json`` keeps (:func:`pick`)."""
    import torch

    from .checkpoints import rng_state, set_rng_state
    from .progress import progress_bar

    was_training = model.training
    saved_weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    saved_rng = rng_state()
    schedule, losses = rates(steps), []
    try:
        model.train()
        optimizer = make_optimizer(1.0)
        ratios = [group["lr"] for group in optimizer.param_groups]
        trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        best, average = math.inf, 0.0
        with progress_bar(total=steps, desc="lr find", unit="step", enabled=progress) as bar:
            for step, lr in enumerate(schedule):
                for group, ratio in zip(optimizer.param_groups, ratios):
                    group["lr"] = ratio * lr
                total, taken = 0.0, 0
                for batch in batches:
                    batch = {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}
                    with autocast():
                        loss = loss_of(model(**batch), batch)
                    (loss / grad_accum).backward()
                    total, taken = total + float(loss.detach()), taken + 1
                    if taken == grad_accum:
                        break
                if not taken:  # the data ran out (the caller caps the steps by what there is)
                    break
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trained, max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss = total / taken
                losses.append(loss)
                bar.update(1)
                if not math.isfinite(loss):
                    break
                average = EMA_BETA * average + (1 - EMA_BETA) * loss
                smoothed = average / (1 - EMA_BETA ** (step + 1))
                best = min(best, smoothed)
                if step > 1 and smoothed > DIVERGED * best:
                    break
    finally:
        model.load_state_dict(saved_weights)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        set_rng_state(saved_rng)
    return pick(schedule[: len(losses)], losses)


def smooth(values: list[float], half_width: int) -> list[float]:
    """A centred moving average (no lag, so the minimum stays at the rate that gave it); the
    points that diverged to inf or NaN are left out."""
    finite = [v for v in values if math.isfinite(v)]
    out = []
    for i in range(len(finite)):
        window = finite[max(0, i - half_width): i + half_width + 1]
        out.append(sum(window) / len(window))
    return out


def pick(lrs: list[float], losses: list[float]) -> dict:
    """The record of a range test: the chosen ``lr`` (a tenth of the rate at the smoothed loss's
    minimum; :data:`FALLBACK_LR` when the loss never fell), ``method``, ``steps``, the steepest
    point for reference, and the curve."""
    half_width = max(1, len(losses) // 25)  # about 4 % of the steps on each side: a 100-step test averages 9 points
    smoothed = smooth(losses, half_width)
    record = {"steps": len(losses), "range": [START_LR, END_LR], "curve": {"lr": lrs, "loss": losses, "smoothed": smoothed}}
    if len(smoothed) < 3:
        return {"lr": FALLBACK_LR, "method": f"fallback: {len(smoothed)} finite losses, too few to pick from", **record}
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i]) / math.log(lrs[i + 1] / lrs[i]) for i in range(lowest)]
    steepest = lrs[min(range(len(slopes)), key=slopes.__getitem__)] if slopes else None
    record.update(minimum_lr=lrs[lowest], steepest_lr=steepest)
    if smoothed[lowest] > smoothed[0] * (1 - MIN_FALL):
        return {"lr": FALLBACK_LR, "method": f"fallback: the loss never fell by {MIN_FALL:.0%}, so no rate in the range helped", **record}
    return {"lr": lrs[lowest] / 10, "method": "minimum/10", **record}


def plot(record: dict, path: Path) -> None:
    """The range test's loss against the rate (log scale), the pick marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curve = record["curve"]
    fig, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot(curve["lr"], curve["loss"], color="tab:blue", alpha=0.35, label="loss")
    axis.plot(curve["lr"][: len(curve["smoothed"])], curve["smoothed"], color="tab:blue", label="smoothed")
    if record.get("minimum_lr"):
        axis.axvline(record["minimum_lr"], color="tab:gray", linestyle=":", linewidth=1, label=f"minimum {record['minimum_lr']:.2g}")
    axis.axvline(record["lr"], color="tab:orange", linewidth=1.5, label=f"picked {record['lr']:.2g} ({record['method'].split(':')[0]})")
    axis.set_xscale("log")
    finite = [v for v in curve["loss"] if math.isfinite(v)]
    if finite:  # the diverged tail would squash the rest
        axis.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), DIVERGED * max(curve["smoothed"][:1] or finite)) * 1.05)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.set_title(f"lccore learning-rate range test ({record['steps']} steps)")
    axis.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
