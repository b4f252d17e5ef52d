"""``precision: auto``: bf16 autocast only where a measurement finds it faster *and* in agreement
with fp32 — for prediction (:meth:`lccore.predictor.Predictor.choose_precision`) and for training
(:func:`choose_training_precision`). On CPUs with bf16 matrix units it is several times faster;
on others it is slower, and the measurement keeps fp32."""

from __future__ import annotations

import time

MIN_SPEEDUP = 1.15  # bf16 must be at least this much faster to be worth its rounding
MIN_AGREEMENT = 0.98  # prediction: share of records that must agree
MIN_GRADIENT_COSINE = 0.99  # training: the bf16 gradient must point where fp32's does
MAX_LOSS_DIFFERENCE = 0.02  # training: relative difference of the losses
MIN_TRAINING_STEPS = 50  # fewer steps than this are not worth measuring: fp32
MEASURED_BATCHES = 2


def agrees(a, b, tolerance: float = 0.05) -> bool:
    """Two prediction records say the same: equal except floats, which may differ by ``tolerance``
    (relative to their size when above 1, as perplexities are)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance * max(1.0, abs(a))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(agrees(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(agrees(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def choose_training_precision(model, batches: list[dict], loss_fn, device) -> dict:
    """Time a forward and backward pass over ``batches`` in fp32 and under bf16 autocast (two
    interleaved rounds, the best of each kept) and compare the loss and the gradient. bf16 is
    chosen when it is :data:`MIN_SPEEDUP` times faster, its loss within
    :data:`MAX_LOSS_DIFFERENCE` and its gradient's cosine to fp32's at least
    :data:`MIN_GRADIENT_COSINE`. The model is left as it was: eval mode for the measurement (no
    dropout draws from the generators), gradients cleared, the generators' state kept."""
    import torch

    was_training = model.training
    model.eval()
    parameters = [p for p in model.parameters() if p.requires_grad]
    timings, losses, gradients = {"fp32": [], "bf16": []}, {}, {}
    with torch.random.fork_rng(devices=[]):
        for _ in range(2):
            for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                model.zero_grad(set_to_none=True)
                start, total = time.perf_counter(), 0.0
                for batch in batches:
                    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss = loss_fn(model(**batch), batch)
                    loss.backward()
                    total += float(loss.detach())
                timings[name].append(time.perf_counter() - start)
                losses[name] = total / len(batches)
                gradients[name] = torch.cat([p.grad.flatten().double() for p in parameters if p.grad is not None])
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    cosine = float(torch.nn.functional.cosine_similarity(gradients["fp32"], gradients["bf16"], dim=0))
    loss_difference = abs(losses["bf16"] - losses["fp32"]) / max(abs(losses["fp32"]), 1e-8)
    speedup = min(timings["fp32"]) / min(timings["bf16"])
    faithful = cosine >= MIN_GRADIENT_COSINE and loss_difference <= MAX_LOSS_DIFFERENCE
    return {
        "chosen": "bf16" if faithful and speedup >= MIN_SPEEDUP else "fp32",
        "bf16_speedup": round(speedup, 2), "gradient_cosine": round(cosine, 5),
        "loss_difference": round(loss_difference, 5), "measured_batches": len(batches),
    }
