"""Whether a finished run looks under-trained, from its own metrics, and what to try.

Two signs, each measured on the run's recorded curve (metrics.json): the training loss still
falling steeply over the last tenth of the steps (the mean loss of the last tenth is more than
``STILL_FALLING`` below that of the tenth before it, and by more than half that share of the
loss at the start), and the dev metric still improving at the
last evaluation (the last evaluation is the best one, after at least two). Short runs (fewer than
``MIN_STEPS`` steps) are not judged: their curves are mostly noise.
"""

from __future__ import annotations

from statistics import mean

#: Relative drop of the mean training loss between the last two tenths of the run that counts as "still falling".
STILL_FALLING = 0.10
MIN_STEPS = 20


def under_training(metrics: dict, *, epochs: int, max_steps: int | None, schedule: str) -> dict | None:
    """``{"reasons": [...], "advice": str}`` when the run looks under-trained, else None."""
    losses = [row["loss"] for row in metrics.get("train", []) if "loss" in row]
    reasons = []
    if len(losses) >= MIN_STEPS:
        window = max(2, len(losses) // 10)
        first, before, last = mean(losses[:window]), mean(losses[-2 * window : -window]), mean(losses[-window:])
        # relative to the loss then, and large beside the loss at the start (a loss near zero halves by noise)
        if before - last > STILL_FALLING * before and before - last > STILL_FALLING / 2 * first:
            reasons.append(f"the training loss was still falling steeply at the end ({before:.4f} -> {last:.4f} over the last {window} steps)")
    dev, best = metrics.get("dev", []), metrics.get("best")
    if len(dev) >= 2 and best and best["step"] == dev[-1]["step"] and not metrics.get("stopped_early"):
        reasons.append(f"the dev {best['metric']} was still improving at the last evaluation ({best['value']:.4f} at step {best['step']})")
    if not reasons:
        return None
    longer = f"train.max_steps: {max_steps * 2}" if max_steps else f"train.epochs: {epochs * 2}"
    advice = [f"training longer ({longer}, with a dev file and train.early_stopping.patience to stop when it stops improving)"]
    if schedule in ("linear", "cosine"):
        advice.append("a schedule that holds the rate for most of a short run (optimizer.schedule: wsd, lccore's default)")
    advice.append("a higher learning rate (optimizer.lr: auto finds one)")
    return {"reasons": reasons, "advice": "try " + "; or ".join(advice)}
