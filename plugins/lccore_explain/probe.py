"""The training probe: at dev evaluations, explain the texts of ``explain.probe`` with the model as
it is then, and keep the records in ``RUN_DIR/explanations/step-N.json`` (plus ``index.html``, all
steps so far side by side), so one can see how the model's reasons changed over training."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

from . import html

FOLDER = "explanations"


def explain_at_evaluation(run, metrics: dict) -> Path | None:
    """Explain the probe texts if this dev evaluation is one to probe; returns the file written."""
    settings = run.config.explain
    if not settings.probe or not run.accelerator.is_main_process:
        return None
    evaluation = len(run.metrics.get("dev", []))  # this one included: the loop records it before notifying
    if (evaluation - 1) % settings.every:
        return None
    from lccore.predictor import Predictor, read_prediction_inputs

    texts = [value for _, value in read_prediction_inputs(settings.probe)]
    predictor = Predictor(
        run.output_dir, run.config, run.task, None, run.accelerator.unwrap_model(run.model), run.tokenizer, run.accelerator.device, engine=run.engine
    )
    explanations = {}
    with preserved_random_state():  # explaining must not change what training draws next
        for name in settings.explainers:
            options = settings.explainer_options.get(name, {})
            explainer = run.engine.create("explainer", name, options, key=f"explain.explainer_options.{name}")
            explanations[name] = explainer.explain(predictor, texts)
    folder = Path(run.output_dir) / FOLDER
    folder.mkdir(exist_ok=True)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    path = folder / f"step-{run.step}.json"
    write_atomically(path, json.dumps({"step": run.step, "epoch": run.epoch + 1, "metrics": numbers, "explanations": explanations}, indent=1, ensure_ascii=False))
    steps = sorted((json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("step-*.json")), key=lambda s: s["step"])
    write_atomically(folder / "index.html", html.probe_page(steps, title=f"lccore probe explanations: {Path(run.output_dir).name}"))
    return path


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    os.replace(partial, path)


@contextlib.contextmanager
def preserved_random_state():
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
