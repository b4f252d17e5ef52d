"""The training loop: one function, read top to bottom.

read data -> build model -> evaluate test (before) -> train with periodic dev evaluation, early
stopping and the best checkpoint kept -> evaluate test (after) with the best model -> write the run.
"""

from __future__ import annotations

import datetime
import math
import platform
from pathlib import Path

import attrs

from . import __version__, finetuning
from .config import RunConfig, dump_yaml, load_config
from .data import file_sha256
from .errors import ConfigError
from .plugins import Engine
from .runner import (
    CONFIG_FILE,
    CURVE_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    model_load_errors,
    optimizer_config_with_options,
    plot_training_curve,
    progress_bar,
    prepare_output_dir,
    resolve,
    run_model,
    save_model_atomically,
    write_json,
)


@attrs.define
class RunState:
    """The live run, as lifecycle hooks see it."""

    config: RunConfig
    output_dir: Path
    engine: Engine
    task: object
    model: object
    accelerator: object
    metrics: dict
    epoch: int = 0
    step: int = 0


@attrs.frozen
class Run:
    """A finished run: where it is, its resolved config and its metrics."""

    output_dir: Path
    config: RunConfig
    metrics: dict

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"

    def load(self, **kwargs):
        from .predictor import load

        return load(self.output_dir, **kwargs)


def train(
    config: RunConfig | dict | str | Path,
    output_dir: str | Path,
    *,
    overrides: list[str] = (),
    engine: Engine | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Run:
    """Fine-tune ``config.model`` on ``config.task`` and write a run directory to ``output_dir``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, get_scheduler

    from .batching import LengthGroupedBatchSampler

    if not isinstance(config, RunConfig):
        config = load_config(config, overrides)
    engine = engine or Engine(disable=config.plugins.disable)
    config, task, head = resolve(config, engine)
    if not config.task.train:
        raise ConfigError("task.train: missing; training needs a training data file")
    settings, stopping = config.train, config.train.early_stopping

    # Data first: a bad row should fail in a second, not after the model has loaded.
    splits = {name: task.read(getattr(config.task, name)) for name in ("train", "dev", "test") if getattr(config.task, name)}
    task.fit(splits["train"])

    # Accelerate keeps its settings in process-wide singletons; a program that trains twice with
    # another precision or accumulation needs them cleared (the process group, in PartialState, stays).
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=settings.mixed_precision, gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed)
    with model_load_errors("model", config.model):
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        model = head.build(config.model, task.head_spec())
    model = finetuning.prepare_model(model, config)
    head.label_smoothing = settings.label_smoothing
    output_dir = prepare_output_dir(output_dir, overwrite)
    features = {name: task.encode(examples, tokenizer, settings.max_length) for name, examples in splits.items()}

    sampler = LengthGroupedBatchSampler(
        [len(f["input_ids"]) for f in features["train"]], settings.batch_size, settings.seed, group_by_length=settings.group_by_length
    )
    train_loader = DataLoader(features["train"], batch_sampler=sampler, collate_fn=lambda rows: task.collate(rows, tokenizer))
    optimizer_component, optimizer_config = optimizer_config_with_options(config, engine)
    optimizer = optimizer_component.factory(finetuning.parameter_groups(model, optimizer_config), optimizer_config)
    steps_per_epoch = math.ceil(len(train_loader) / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = get_scheduler(
        {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[optimizer_config.schedule],
        optimizer,
        num_warmup_steps=round(optimizer_config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    metrics = {"train": [], "dev": [], "best": None, "test": {}}
    state = RunState(config, output_dir, engine, task, model, accelerator, metrics)

    def evaluate(split: str, eval_model) -> dict:
        predictions, loss = run_model(
            eval_model, task, tokenizer, features[split], batch_size=settings.eval_batch_size,
            device=accelerator.device, autocast=accelerator.autocast, loss_fn=head.loss,
            progress=progress, desc=f"eval {split}",
        )
        result = task.metrics(predictions, splits[split])
        if loss is not None:
            result["loss"] = loss
        return result

    if "test" in splits:
        metrics["test"]["before"] = evaluate("test", model)
        engine.notify("on_evaluate", run=state, split="test.before", metrics=metrics["test"]["before"])

    sign = -1.0 if stopping.metric == "loss" or not task.greater_is_better else 1.0
    best_value, evaluations_without_improvement, stop = -math.inf, 0, False

    def evaluate_dev() -> bool:
        """Evaluate on dev, keep the best checkpoint; True when early stopping says stop."""
        nonlocal best_value, evaluations_without_improvement
        result = evaluate("dev", model)
        metrics["dev"].append({"step": state.step, "epoch": state.epoch + 1, **result})
        engine.notify("on_evaluate", run=state, split="dev", metrics=result)
        if sign * result[stopping.metric] > best_value + stopping.min_delta:
            best_value, evaluations_without_improvement = sign * result[stopping.metric], 0
            metrics["best"] = {"step": state.step, "epoch": state.epoch + 1, "metric": stopping.metric, "value": result[stopping.metric]}
            path = save_model_atomically(accelerator.unwrap_model(model), tokenizer, output_dir)
            engine.notify("on_checkpoint", run=state, path=path)
        else:
            evaluations_without_improvement += 1
        return stopping.patience is not None and evaluations_without_improvement >= stopping.patience

    engine.notify("on_train_start", run=state)
    model.train()
    bar = progress_bar(total=total_steps, desc="train", unit="step", enabled=progress)
    for state.epoch in range(settings.epochs):
        sampler.set_epoch(state.epoch)
        finetuning.start_epoch(accelerator.unwrap_model(model), config, state.epoch)
        accumulated = []
        for batch in train_loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = head.loss(outputs, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            accumulated.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            step_loss = float(torch.stack(accumulated).float().mean())
            accumulated = []
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"training loss became {step_loss} at step {state.step}; lower optimizer.lr or check the data")
            logs = {"step": state.step, "epoch": state.epoch + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
            metrics["train"].append(logs)
            engine.notify("on_train_step", run=state, step=state.step, logs=logs)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=state.epoch + 1, refresh=False)
            if "dev" in splits and settings.eval_every and state.step % settings.eval_every == 0:
                stop = evaluate_dev()
                if stop:
                    break
        if stop:
            break
        if "dev" in splits and not settings.eval_every:
            stop = evaluate_dev()
            if stop:
                break
    bar.close()
    if "dev" in splits and settings.eval_every and (not metrics["dev"] or metrics["dev"][-1]["step"] != state.step) and not stop:
        evaluate_dev()  # the steps after the last periodic evaluation count too
    metrics["stopped_early"] = stop

    if "dev" not in splits:  # without a dev set, the final weights are the result
        path = save_model_atomically(accelerator.unwrap_model(model), tokenizer, output_dir)
        engine.notify("on_checkpoint", run=state, path=path)
    # The test score after fine-tuning is measured on the saved best model, loaded back as a user would.
    if "test" in splits:
        best_model = finetuning.load_trained_model(head, config, task.head_spec(), output_dir / "model").to(accelerator.device)
        metrics["test"]["after"] = evaluate("test", best_model)
        engine.notify("on_evaluate", run=state, split="test.after", metrics=metrics["test"]["after"])

    dump_yaml(config.to_dict(), output_dir / CONFIG_FILE)
    write_json(output_dir / METRICS_FILE, metrics)
    write_json(output_dir / MANIFEST_FILE, manifest(config, engine, task, splits))
    if metrics["train"]:
        plot_training_curve(metrics, output_dir / CURVE_FILE, stopping.metric)
    engine.notify("on_train_end", run=state, metrics=metrics)
    return Run(output_dir, config, metrics)


def manifest(config: RunConfig, engine: Engine, task, splits: dict) -> dict:
    import accelerate
    import torch
    import transformers

    def used(kind: str, name: str) -> dict:
        plugin = engine.plugin_of(kind, name)
        return {"name": name, "plugin": plugin.name, "distribution": plugin.distribution, "version": plugin.version}

    return {
        "lccore": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.train.seed,
        "model": config.model,
        "components": {
            "task": used("task", config.task.name),
            "head": used("head", config.head.name),
            "optimizer": used("optimizer", config.optimizer.name),
        },
        "task_state": task.head_spec(),
        "data": {
            name: {"path": getattr(config.task, name), "sha256": file_sha256(getattr(config.task, name)), "examples": len(examples)}
            for name, examples in splits.items()
        },
        "plugins": [{k: p[k] for k in ("name", "distribution", "version", "status")} for p in engine.report()],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }
