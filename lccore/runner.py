"""Pieces shared by training and inference: resolving a config against an engine, running a
model over examples in length-sorted batches, and the run directory's files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import attrs

from . import deadline
from .batching import sorted_batches
from .config import RunConfig, unstructure
from .errors import ConfigError, RunDirError
from .plugins import Engine
from .progress import progress_bar, without_hf_bars

MODEL_DIR = "model"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
CURVE_FILE = "training_curve.png"


def model_origin(model) -> dict | None:
    """The manifest of the lccore run whose ``model/`` folder ``model`` is (a pretraining run's
    output named by path), or None for a hub name, a scratch config or a folder lccore did not write."""
    if not isinstance(model, str) or Path(model).name != "model":
        return None
    manifest = Path(model).parent / "manifest.json"
    try:
        origin = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return origin if isinstance(origin, dict) and "lccore" in origin else None


def resolve(config: RunConfig, engine: Engine, *, recorded: dict | None = None):
    """Fill in the defaults that depend on plugins; returns (config, task, head).

    After this the config names every component it uses and holds every option's value, so the
    saved copy reproduces the run exactly. ``recorded``: a finished run's manifest ``components``
    (loading it for inference): each component comes from the plugin that gave it in training,
    whatever other plugins registered since, and the optimizer, which inference does not use, is
    not looked up."""
    plugin_of = lambda kind: (recorded or {}).get(kind, {}).get("plugin")  # noqa: E731
    task_component = engine.component("task", config.task.name, key="task.name", plugin=plugin_of("task"))
    task_options = engine.parse_options(task_component, config.task.options, key="task")
    task = engine.instantiate(task_component, task_options)
    if task_options is not None:
        config.task.options = unstructure(task_options)

    if config.head.name is None:
        origin = model_origin(config.model)
        chosen = task.default_head_for(origin) if origin is not None and hasattr(task, "default_head_for") else None
        config.head.name = chosen or task.default_head
        if chosen and chosen != task.default_head and int(os.environ.get("RANK", "0")) == 0:
            made_by = origin.get("components", {}).get("task", {}).get("name")
            print(f"head: {chosen} (the model was made by a '{made_by}' run, {config.model}; name another with head: NAME)", file=sys.stderr, flush=True)
    head = engine.create("head", config.head.name, config.head.options, key="head", plugin=plugin_of("head"))

    if recorded is None:  # training: the optimizer is built (inference never looks it up)
        optimizer = engine.component("optimizer", config.optimizer.name, key="optimizer.name")
        parsed = engine.parse_options(optimizer, config.optimizer.options, key="optimizer")
        if parsed is not None:
            config.optimizer.options = unstructure(parsed)

    stopping = config.train.early_stopping
    if stopping.metric is None:
        stopping.metric = task.metric
    allowed = list(task.metric_names) + ["loss"]
    if stopping.metric not in allowed:
        raise ConfigError(
            f"train.early_stopping.metric: task '{config.task.name}' has no metric '{stopping.metric}'; "
            f"expected one of {', '.join(allowed)}"
        )
    return config, task, head


def optimizer_config_with_options(config: RunConfig, engine: Engine):
    component = engine.component("optimizer", config.optimizer.name)
    options = engine.parse_options(component, config.optimizer.options, key="optimizer")
    return component, attrs.evolve(config.optimizer, options=options)


@contextlib.contextmanager
def model_load_errors(key: str, source):
    """Turn transformers' errors for a missing or malformed model (a truncated or damaged
    ``model.safetensors`` among them) into a one-line config error."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, SafetensorError):
            reason = f"a weights file is damaged or truncated ({reason})"
        raise ConfigError(f"{key}: cannot load '{source}': {reason}") from None


def run_model(model, task, tokenizer, features, **options) -> tuple[list[dict], float | None]:
    """Prediction records in input order (one per example, after ``task.gather``), and the mean
    loss when the features carry labels. ``features``: a list of feature dicts or a
    :class:`lccore.data.features.FeatureSet`; ``options`` as :func:`run_chunks` takes them."""
    per_chunk, loss, _ = run_chunks(model, task, tokenizer, features, **options)
    return [record for records in per_chunk for record in records], loss


def run_chunks(
    model,
    task,
    tokenizer,
    features,
    *,
    chunks: list[tuple[int, int]] | None = None,
    batch_size: int,
    device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    loss_fn=None,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[list[list[dict]], float | None, int]:
    """``task.gather``'s records for each chunk of ``features`` (all of them, or those in
    ``chunks``), the mean loss when the features carry labels, and the number of features scored.

    Within a chunk, batches are sorted by length so that each is padded only to its own longest member."""
    import torch

    from .data.features import FeatureSet

    if not isinstance(features, FeatureSet):
        features = FeatureSet.in_memory(list(features))
    chunks = features.chunks() if chunks is None else chunks
    loss_sum, loss_count, per_chunk = 0.0, 0, []
    was_training = model.training
    model.eval()
    bar = progress_bar(total=sum(end - start for start, end in chunks), desc=desc, unit="ex", enabled=progress, leave=False)
    with torch.inference_mode():
        for start, end in chunks:
            chunk_features = features.__getitems__(range(start, end))
            records: list[dict | None] = [None] * len(chunk_features)
            for indices in sorted_batches(features.lengths[start:end], batch_size):
                deadline.check()  # a time limit (lccore.deadline.limit) stops the work between batches
                batch_features = [chunk_features[i] for i in indices]
                batch = task.collate(batch_features, tokenizer)
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                with autocast():
                    outputs = task.forward(model, batch)
                if loss_fn is not None and getattr(outputs, "loss", None) is not None:  # the batch had gold labels
                    loss_sum += float(loss_fn(outputs, batch)) * len(indices)
                    loss_count += len(indices)
                for index, record in zip(indices, task.decode(outputs, batch, batch_features)):
                    records[index] = record
                bar.update(len(indices))
            per_chunk.append(task.gather(records, chunk_features))
    bar.close()
    model.train(was_training)
    return per_chunk, (loss_sum / loss_count if loss_count else None), loss_count


# --- run directory ------------------------------------------------------------------------------


def save_model_atomically(model, tokenizer, run_dir: Path) -> Path:
    """Write ``model/`` through a temporary folder and a rename, so a crash never leaves half a model."""
    final = run_dir / MODEL_DIR
    partial, old = run_dir / f"{MODEL_DIR}.partial", run_dir / f"{MODEL_DIR}.old"
    for leftover in (partial, old):  # from a run killed while saving
        if leftover.exists() and (leftover is partial or final.exists()):
            shutil.rmtree(leftover)
    if old.exists():  # killed between the two renames: the previous model is the intact one
        os.replace(old, final)
    with without_hf_bars():
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    if final.exists():
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old)
    else:
        os.replace(partial, final)
    return final


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    for name in (CONFIG_FILE, MANIFEST_FILE, MODEL_DIR):
        if not (path / name).exists():
            raise RunDirError(f"{path}: not a finished lccore run (missing {name})")
    return path


def plot_training_curve(metrics: dict, path: Path, metric: str) -> None:
    """Training loss per step and the dev metric per evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [row["step"] for row in metrics["train"]]
    loss_axis.plot(steps, [row["loss"] for row in metrics["train"]], color="tab:blue", alpha=0.8, label="train loss")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    if metrics["dev"]:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            [row["step"] for row in metrics["dev"]], [row.get(metric) for row in metrics["dev"]], "o-", color="tab:orange"
        )
        metric_axis.set_ylabel(f"dev {metric}", color="tab:orange")
        best = metrics.get("best")
        if best:
            metric_axis.axvline(best["step"], color="tab:gray", linestyle=":", linewidth=1)
    loss_axis.set_title("lccore training curve")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
