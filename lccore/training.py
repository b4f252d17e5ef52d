"""The training loop: one function, read top to bottom.

read data -> build model -> evaluate test (before) -> train with periodic dev evaluation, early
stopping and the best checkpoint kept -> evaluate test (after) with the best model -> write the run.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import attrs

from . import checkpoints, diagnosis, ethics, finetuning, lr_find, scratch, tracking
from .auxiliary import add_lm_objective
from .continual import PreviousRun
from .config import RunConfig, ScratchModelConfig, dump_yaml, load_config, optimizer_config_with_options, policy_specs, resolve, unstructure
from .data import read_split, split_sha256
from .data.features import (
    FORMAT, cache_root, cached_folder, encoding_fingerprint, fingerprint, split_features, stream_examples, task_fingerprint,
)
from .data.stream import StreamedSplit
from .distributed import fsdp2_layers, fsdp2_on_cpu, fsdp_not_applied, meta_copy, refuse_deepspeed, shard_tied_together, whole_model
from .errors import ConfigError, DataError, LccoreError, PluginError, RunDirError, defined_at, model_load_errors
from .plugins import Engine
from .predictor import run_chunks
from .rundir import CONFIG_FILE, CURVE_FILE, MANIFEST_FILE, MARKER_FILE, METRICS_FILE, RunDir, save_model_atomically, user_entries, write_json
from .progress import progress_bar, without_hf_bars
from .version import __version__

#: Training features a task's ``describe_features`` sees when the run starts.
FEATURES_DESCRIBED = 64


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
    tokenizer: object = None


@attrs.frozen
class Run:
    """A finished run: where it is, its resolved config and its metrics."""

    output_dir: Path
    config: RunConfig
    metrics: dict
    #: False in the other processes of a multi-process run (only the main one writes and reports).
    is_main_process: bool = True

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
    resume: bool = False,
) -> Run:
    """Fine-tune ``config.model`` on ``config.task`` and write a run directory to ``output_dir``.

    With ``resume=True`` an interrupted run in ``output_dir`` continues from its newest intact
    checkpoint and ends with the same weights as a run that was never interrupted. ``overwrite``
    (and a resume with no checkpoint yet) replaces only a run lccore wrote, and removes only its
    own files (:mod:`lccore.rundir`); the folder is locked while the run writes."""
    if not isinstance(config, RunConfig):
        config = load_config(config, overrides)
    # The main process (rank 0 of a torchrun launch) checks, marks and locks the folder; the
    # others only write into it after the main process has prepared it.
    main = int(os.environ.get("RANK", "0")) == 0
    # transformers' own bars and load reports off for the whole run (its errors still show): the run prints its own
    with RunDir(output_dir, overwrite=overwrite, resume=resume) if main else contextlib.nullcontext() as run_dir, without_hf_bars():
        return _train(config, Path(output_dir), run_dir, engine=engine, progress=progress, resume=resume)


def _train(config: RunConfig, output_dir: Path, run_dir: RunDir | None, *, engine: Engine | None, progress: bool, resume: bool) -> Run:
    started = time.monotonic()
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed
    from torch.utils.data import DataLoader

    from .batching import LengthGroupedBatchSampler

    engine = engine or Engine(disable=config.plugins.disable)
    config, task, head = resolve(config, engine)
    finetuning.check_head(head, config, task)
    if not config.task.train:
        raise ConfigError("task.train: missing; training needs a training data file")
    settings, stopping = config.train, config.train.early_stopping
    tracking.check_trackers(settings.report_to)
    if config.data.streaming and not settings.max_steps:
        raise ConfigError("data.streaming: a streamed training split has no length, so the run needs a step budget: set train.max_steps")
    # A folder lccore cannot show it wrote is only ever resumed from a checkpoint, never cleared;
    # that is checked before anything in it is read (a config.yaml there may be the user's own).
    unowned = run_dir is not None and not run_dir.owned
    if unowned and not checkpoints.checkpoint_dirs(output_dir):
        raise RunDirError(f"{output_dir}: no checkpoint to resume from, and lccore cannot show it wrote this folder (no {MARKER_FILE}), so it will not clear it: choose an empty or new --output")
    checkpoint = find_checkpoint(output_dir, config) if resume else None
    if unowned and checkpoint is None:  # every checkpoint in it was damaged
        raise RunDirError(f"{output_dir}: no intact checkpoint to resume from, and lccore cannot show it wrote this folder (no {MARKER_FILE}), so it will not clear it")

    previous = PreviousRun.open(settings.init_from, config.task.name) if settings.init_from else None
    if settings.replay and previous is None:
        raise ConfigError("train.replay: replays an earlier run's data, so it needs train.init_from")

    # Data first: a bad row should fail in a second, not after the model has loaded. Evaluation
    # splits are read whole (their metrics need the examples); the training split streams from
    # its files pass after pass and is never held in memory (docs/data.md).
    data_files = {name: getattr(config.task, name) for name in ("train", "dev", "test") if getattr(config.task, name)}
    previous_test = previous.test_file() if previous is not None else None
    if previous_test:  # the earlier run's test set, scored before and after: forgetting shows
        data_files["previous_test"] = previous_test
    data_hashes = {name: split_sha256(files) for name, files in data_files.items()}
    eval_examples = {name: read_split(task, files) for name, files in data_files.items() if name != "train"}
    cache = cache_root() if config.data.cache else None
    # Ethics policies clean the training data before anything is fitted or tokenised.
    policies = ethics.build_policies(engine, config.ethics) if config.ethics else None
    scratch_dir = tempfile.TemporaryDirectory(prefix="lccore-scratch-")  # removed when the run ends
    workdir = Path(scratch_dir.name)
    ethics_audit = ethics.AuditLog(workdir / ETHICS_AUDIT_FILE)  # appended as the data is filtered; the run's once it starts
    train_examples = TrainingExamples(task, config.task.train, policies, ethics_audit, progress=progress and os.environ.get("LOCAL_RANK", "0") == "0")
    if previous is not None:  # the earlier run's label space, so that its head still fits
        task.restore(previous.task_state)
    task_key = task_fingerprint(config.task.name, task, config.task.options)
    data_key = fingerprint(task_key, data_hashes["train"], config.ethics, previous.task_state if previous is not None else None)
    fitted = read_fitted(cache, data_key) if policies is None else None
    if fitted is not None:  # fitted on these files before: the task takes back what it learnt
        task.restore(fitted)
    else:
        task.fit(train_examples)
        write_fitted(cache, data_key, task.head_spec())
    ethics_report = None
    if policies is not None:  # the pass that fitted recorded the decisions (or this one does)
        if not len(train_examples):
            raise ConfigError(f"ethics: the policies dropped all {train_examples.report['examples']} training examples")
        ethics_report = train_examples.report
        if ethics_report["dropped"] and int(os.environ.get("RANK", "0")) == 0:  # said now, not only in the summary: the run trains on less
            print(f"lccore: warning: {ethics_dropped_line(ethics_report)}", file=sys.stderr, flush=True)
    if previous is not None:
        train_examples.replayed = previous.replay(task, settings.replay, settings.seed)
    train_examples.progress = False  # the tokenising pass shows a bar of its own

    def make_accelerator(mixed_precision: str) -> Accelerator:
        # Accelerate keeps its settings in process-wide singletons; a program that trains twice with
        # another precision or accumulation needs them cleared (the process group, in PartialState, stays).
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        refuse_deepspeed()
        accelerator = Accelerator(
            # Started by torchrun (several processes) on a machine without a GPU: data-parallel over
            # CPU processes (gloo); Accelerate only picks that when told to use the CPU.
            cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
            mixed_precision=mixed_precision,
            gradient_accumulation_steps=settings.grad_accum,
            # batch_size is the global batch: with N processes each takes 1/N of it, so a run's
            # optimisation (steps, schedule, effective batch) does not depend on the process count.
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            log_with=settings.report_to or None,
            project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / tracking.TRACKERS_DIR)),
        )
        fsdp2_on_cpu(accelerator)
        return accelerator

    auto_precision = settings.mixed_precision == "auto"  # decided below, once the model and data are ready
    accelerator = make_accelerator("no" if auto_precision else settings.mixed_precision)
    if settings.batch_size % accelerator.num_processes:
        raise ConfigError(f"train.batch_size: {settings.batch_size} does not split evenly over {accelerator.num_processes} processes")
    if settings.freeze.strategy == "gradual" and accelerator.num_processes > 1:
        raise ConfigError("train.freeze.strategy: gradual unfreezing needs a single process (the trained parameters change per epoch)")
    main_process = accelerator.is_main_process
    if main_process and (line := fsdp_not_applied(accelerator)):
        print(f"lccore: warning: {line}", file=sys.stderr, flush=True)
    notify = engine.notify if main_process else (lambda *args, **kwargs: None)  # observers see one run, not N
    progress = progress and accelerator.is_local_main_process
    set_seed(settings.seed)
    model, tokenizer, model_source = starting_model(config, task, head, previous, train_examples, workdir, cache, data_key)
    check_max_length(model, tokenizer, settings.max_length)
    model = finetuning.prepare_model(model, config)
    if settings.aux_lm_weight:
        if settings.lora is not None:
            raise ConfigError("train.aux_lm_weight: not with train.lora (the LM head would train the frozen backbone's copy)")
        model = add_lm_objective(model, model_source, tokenizer)
    head.label_smoothing = settings.label_smoothing
    # Tokenised once into the cache (or the scratch folder), read memory-mapped. Training batches
    # are sharded by Accelerate; evaluation chunks by us, one process each.
    encoding_key = encoding_fingerprint(task_key, task, tokenizer, settings.max_length)
    features_at = cache if cache is not None else workdir
    features, streamed = {}, None
    if config.data.streaming:  # read, shuffled, tokenised and packed on the fly, pass after pass (docs/data.md)
        streamed = StreamedSplit(
            task, train_examples.with_replay, tokenizer=tokenizer, max_length=settings.max_length, batch_size=settings.batch_size,
            seed=settings.seed, shuffle_buffer=config.data.shuffle_buffer, num_proc=config.data.num_proc, files=train_examples.files,
        )
    else:
        features["train"] = split_features(
            task, train_examples.with_replay, tokenizer=tokenizer, max_length=settings.max_length, name="train", progress=progress,
            key=fingerprint(encoding_key, "train", data_hashes["train"], config.ethics, train_examples.replay_sha256()), cache=features_at,
            expected_examples=train_examples.known_count(), num_proc=config.data.num_proc,
            source_bytes=train_examples.source_bytes(),
        )
    tokenizer_record = task.tokenizer_record(tokenizer) if hasattr(task, "tokenizer_record") else {}
    if main_process and progress and streamed is None and hasattr(task, "describe_features"):
        described = task.describe_features(features["train"].__getitems__(list(range(min(FEATURES_DESCRIBED, len(features["train"]))))), tokenizer)
        if described:
            print(described, flush=True)
    for name, examples in eval_examples.items():
        features[name] = split_features(
            task, lambda examples=examples: examples, tokenizer=tokenizer, max_length=settings.max_length, name=name, progress=progress,
            key=fingerprint(encoding_key, "eval", data_hashes[name]), cache=features_at, expected_examples=len(examples),
            num_proc=config.data.num_proc,
        )

    if main_process and checkpoint is None:
        kept = run_dir.clear()  # a run started again: lccore's own files go, nothing else
        if kept and progress:
            print(f"lccore: {output_dir}: left {len(kept)} entries lccore did not write: {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}", flush=True)
        dump_yaml(config.to_dict(), output_dir / CONFIG_FILE)  # resume compares against it
    accelerator.wait_for_everyone()

    if streamed is None:
        sampler = LengthGroupedBatchSampler(features["train"].lengths, settings.batch_size, settings.seed, group_by_length=settings.group_by_length)
        train_loader = DataLoader(
            features["train"], batch_sampler=sampler, collate_fn=lambda rows: task.collate(rows, tokenizer),
            generator=torch.Generator().manual_seed(settings.seed),  # iterating must not draw from the global RNG (exact resume)
        )
    precision_choice = None
    if auto_precision:
        first_rows = streamed.batches(0) if streamed is not None else (features["train"].__getitems__(indices) for indices in sampler)
        first_batches = (task.collate(rows, tokenizer) for rows in first_rows)
        total_batches = settings.max_steps * settings.grad_accum if settings.max_steps else len(train_loader) * settings.epochs
        precision_choice = measured_precision(model, head, first_batches, checkpoint, accelerator, total_batches=total_batches)
        if streamed is not None:
            first_rows.close()  # a stream's tokenising workers go now, not when the run ends
        if precision_choice["chosen"] == "bf16":
            accelerator = make_accelerator("bf16")
        if main_process and progress:
            print(f"precision auto: {precision_choice['chosen']} ({precision_choice['reason']})", flush=True)
    # A step budget (train.max_steps) may end inside an epoch; the schedule decays over it. A
    # stream's passes have no known length: as many as the budget takes.
    if streamed is None:
        steps_per_epoch = math.ceil(len(train_loader) / settings.grad_accum)
        total_steps = settings.max_steps or steps_per_epoch * settings.epochs
        epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        total_steps, epochs = settings.max_steps, settings.max_steps * settings.grad_accum
    optimizer_component, optimizer_config = optimizer_config_with_options(config, engine)
    lr_choice = None
    if optimizer_config.lr == "auto":  # the range test runs here, before the run's optimiser exists

        def range_test_batches():
            """The training batches, pass after pass, in the run's order (a sampler of its own: the run's stays untouched)."""
            for epoch in itertools.count():
                if streamed is not None:
                    rows_of = streamed.batches(epoch)
                else:
                    own = LengthGroupedBatchSampler(features["train"].lengths, settings.batch_size, settings.seed, group_by_length=settings.group_by_length)
                    own.set_epoch(epoch)
                    rows_of = (features["train"].__getitems__(indices) for indices in own)
                with contextlib.closing(rows_of):  # a stream's tokenising workers go with it
                    for rows in rows_of:
                        yield task.collate(rows, tokenizer)

        def objective(outputs, batch):
            loss = head.loss(outputs, batch)
            if loss is None:
                raise PluginError(no_loss_message(config, engine, task, head, batch))
            return loss + settings.aux_lm_weight * outputs["lm_loss"] if settings.aux_lm_weight else loss

        def make_optimizer(lr: float):
            at_rate = attrs.evolve(optimizer_config, lr=lr)
            return optimizer_component.factory(finetuning.parameter_groups(model, at_rate), at_rate)

        lr_choice = found_lr(model, make_optimizer, range_test_batches(), objective, checkpoint, accelerator,
                             steps=min(optimizer_config.lr_find_steps, total_steps), total_steps=total_steps,
                             max_grad_norm=settings.max_grad_norm, progress=progress)
        optimizer_config = attrs.evolve(optimizer_config, lr=lr_choice["lr"])
        if main_process and checkpoint is None:
            lr_find.plot(lr_choice, output_dir / lr_find.PICTURE_FILE)
        if main_process and progress:
            print(f"lr auto: {lr_choice['lr']:.3g} ({lr_choice['method']}, {lr_choice['steps']}-step range test; {lr_find.PICTURE_FILE})", flush=True)
    tracked_config = config.to_dict()
    tracked_config["optimizer"]["lr"] = optimizer_config.lr  # trackers get the rate the run trains with
    finish_tracking = tracking.start(accelerator, settings.report_to, tracked_config, output_dir,
                                     resumed_after=checkpoints.step_of(checkpoint) if checkpoint is not None else None)
    optimizer = optimizer_component.factory(finetuning.parameter_groups(model, optimizer_config), optimizer_config)
    scheduler = lr_schedule(optimizer, optimizer_config.schedule, warmup=round(optimizer_config.warmup_ratio * total_steps), total=total_steps,
                            decay=round(optimizer_config.decay_ratio * total_steps))
    skeleton, sharded_checkpoints = None, False
    if accelerator.is_fsdp2:  # FSDP2 shards the model in place; whole_model gathers it into a copy of the skeleton
        fsdp2_layers(accelerator.state.fsdp_plugin, model)
        skeleton = meta_copy(model)
        state_dict_type = accelerator.state.fsdp_plugin.state_dict_type
        sharded_checkpoints = getattr(state_dict_type, "name", state_dict_type) == "SHARDED_STATE_DICT"
    with shard_tied_together(accelerator, model, optimizer) if accelerator.is_fsdp2 else contextlib.nullcontext():
        if streamed is None:
            model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
        else:
            model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def streamed_batches(epoch: int, position, first_batch: int):
        """A pass over the stream: every process reads it and trains on its own slice of each batch."""
        share = settings.batch_size // accelerator.num_processes
        mine = slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)
        given = 0
        for rows in streamed.batches(epoch, position, first_batch):
            if accelerator.num_processes > 1:
                if len(rows) < settings.batch_size:  # the pass's last, short batch does not split evenly
                    break
                rows = rows[mine]
            given += 1
            batch = task.collate(rows, tokenizer)  # here, not ahead: masks draw from the RNG in step order
            yield {key: value.to(accelerator.device) if hasattr(value, "to") else value for key, value in batch.items()}
        if not given and position is None:
            raise DataError(f"{config.task.train}: the training split gave no batch of {settings.batch_size}")

    metrics = {"train": [], "dev": [], "best": None, "test": {}}
    if precision_choice is not None:
        metrics["precision"] = precision_choice
    if lr_choice is not None:
        metrics["lr_find"] = lr_choice
    if ethics_report is not None:
        metrics["ethics"] = {"training_data": ethics_report}
        if main_process:  # a resumed run filtered again: its log replaces the interrupted session's
            ethics_audit.move_to(output_dir / ETHICS_AUDIT_FILE)
    state = RunState(config, output_dir, engine, task, model, accelerator, metrics, tokenizer=tokenizer)

    def evaluate(split: str, eval_model) -> dict:
        # Each process runs its own chunks with the bare model: a data-parallel wrapper would sync
        # buffers on every forward, and processes with different numbers of batches would hang.
        eval_model = accelerator.unwrap_model(eval_model)
        chunks = features[split].chunks()
        mine = list(range(accelerator.process_index, len(chunks), accelerator.num_processes))
        with whole_model(eval_model, skeleton) as eval_model:
            per_chunk, loss, scored = run_chunks(
                eval_model, task, tokenizer, features[split], chunks=[chunks[i] for i in mine], batch_size=settings.eval_batch_size,
                device=accelerator.device, autocast=accelerator.autocast, loss_fn=head.loss, progress=progress, desc=f"eval {split}",
            )
        if accelerator.num_processes > 1:  # every example scored exactly once; chunks back in file order
            shards = gather_object([(mine, per_chunk, loss, scored)])
            by_chunk = {index: records for indices, records_list, _, _ in shards for index, records in zip(indices, records_list)}
            per_chunk = [by_chunk[index] for index in range(len(chunks))]
            counted = [(shard_loss, count) for _, _, shard_loss, count in shards if shard_loss is not None and count]
            loss = sum(l * n for l, n in counted) / sum(n for _, n in counted) if counted else None
        result = task.metrics([record for records in per_chunk for record in records], eval_examples[split])
        if loss is not None:
            result["loss"] = loss
        return result

    def save_best() -> None:
        with whole_model(accelerator.unwrap_model(model), skeleton) as whole:
            if main_process:
                path = save_model_atomically(whole, tokenizer, output_dir)
                notify("on_checkpoint", run=state, path=path)
            accelerator.wait_for_everyone()

    lower_is_better = stopping.metric == "loss" or stopping.metric in getattr(task, "lower_is_better", ()) or not task.greater_is_better
    sign = -1.0 if lower_is_better else 1.0
    best_value, evaluations_without_improvement, stop = None, 0, False
    start_epoch, batches_done, resumed_rng, resumed_position = 0, 0, None, None
    earlier = {"seconds": 0.0, "sessions": 0}

    def clock() -> None:
        """metrics.json's wall time: this session's (data, training, evaluation) added to the interrupted ones'."""
        metrics["time"] = {"seconds": round(earlier["seconds"] + time.monotonic() - started, 1), "sessions": earlier["sessions"] + 1}

    if checkpoint is not None:
        try:
            loop = checkpoints.load(checkpoint, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler, rank=accelerator.process_index)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:  # it passed its checks, yet does not fit this model
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RunDirError(f"{checkpoint}: does not fit this run's model and optimiser ({reason})") from None
        check_resumable(checkpoint, loop, data_hashes)
        metrics.update(loop["metrics"])
        earlier = metrics.get("time") or earlier  # the time the interrupted sessions took, up to this checkpoint
        state.step, start_epoch, batches_done = loop["step"], loop["epoch"], loop["batches_done"]
        best_value, evaluations_without_improvement = loop["best_value"], loop["evaluations_without_improvement"]
        resumed_rng, resumed_position = loop["rng"], loop.get("stream")
        if streamed is not None and batches_done and not (
            isinstance(resumed_position, list) and len(resumed_position) == 2 and all(type(v) is int and v >= 0 for v in resumed_position)
        ):
            raise RunDirError(f"{checkpoint}: its stream position {resumed_position!r} is not [examples, features]; the checkpoint is damaged")
        if main_process:
            # batch_size is global and every process is seeded alike, so the data order and the
            # schedule do not depend on the number of processes: a run may resume on another one
            moved = f"; written by {loop['processes']} processes, continuing on {accelerator.num_processes}" if loop["processes"] != accelerator.num_processes else ""
            print(f"resuming from {checkpoint} (step {state.step}, epoch {start_epoch + 1}{moved})", flush=True)
    else:
        for split in ("test", "previous_test"):
            if split in features:
                metrics.setdefault(split, {})["before"] = evaluate(split, model)
                notify("on_evaluate", run=state, split=f"{split}.before", metrics=metrics[split]["before"])

    def evaluate_dev() -> bool:
        """Evaluate on dev, keep the best checkpoint; True when early stopping says stop."""
        nonlocal best_value, evaluations_without_improvement
        result = evaluate("dev", model)
        metrics["dev"].append({"step": state.step, "epoch": state.epoch + 1, **result})
        tracking.log(accelerator, settings.report_to, "dev", result, state.step)
        notify("on_evaluate", run=state, split="dev", metrics=result)
        if best_value is None or sign * result[stopping.metric] > best_value + stopping.min_delta:
            best_value, evaluations_without_improvement = sign * result[stopping.metric], 0
            metrics["best"] = {"step": state.step, "epoch": state.epoch + 1, "metric": stopping.metric, "value": result[stopping.metric]}
            save_best()
        else:
            evaluations_without_improvement += 1
        return stopping.patience is not None and evaluations_without_improvement >= stopping.patience

    def save_checkpoint(epoch: int, batches: int) -> None:
        """A resumable checkpoint: the loop continues at micro-batch ``batches`` of ``epoch``."""
        folder = checkpoints.partial_dir(output_dir, state.step)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoints.write_rng_state(folder, accelerator.process_index)
        accelerator.wait_for_everyone()
        unwrapped = accelerator.unwrap_model(model)
        if sharded_checkpoints:  # each process writes its own slices; nothing is gathered
            saving, optimizer_state = contextlib.nullcontext(None), checkpoints.save_shards(folder, unwrapped, optimizer)
        else:  # under FSDP2 the weights and the optimiser's state are gathered whole (by every process)
            saving, optimizer_state = whole_model(unwrapped, skeleton), checkpoints.optimizer_state(unwrapped, optimizer)
        with saving as whole:
            if main_process:
                clock()
                loop = {
                    "step": state.step, "epoch": epoch, "batches_done": batches, "best_value": best_value,
                    "evaluations_without_improvement": evaluations_without_improvement, "metrics": metrics, "data": data_hashes,
                    "stream": streamed.position_after(batches) if streamed is not None else None,
                }
                checkpoints.save(
                    output_dir, state.step, model=whole, optimizer=optimizer_state, scheduler=scheduler,
                    loop=loop, rank_count=accelerator.num_processes, keep=settings.keep_checkpoints,
                )
        accelerator.wait_for_everyone()

    notify("on_train_start", run=state)
    model.train()
    bar = progress_bar(total=total_steps, desc="train", unit="step", enabled=progress)
    bar.update(state.step)
    for state.epoch in range(start_epoch, epochs):
        if state.step >= total_steps:
            break
        finetuning.start_epoch(accelerator.unwrap_model(model), config, state.epoch)
        if streamed is not None:  # a resumed pass starts at the exact example it stopped at
            batches = streamed_batches(state.epoch, resumed_position, batches_done)
            resumed_position = None
        else:
            # Accelerate's loader re-seeds the sampler with its own pass counter: keep both on this
            # epoch, also after a resumed epoch ran through a batch-skipping copy of the loader.
            train_loader.set_epoch(state.epoch)
            sampler.set_epoch(state.epoch)
            batches = accelerator.skip_first_batches(train_loader, batches_done) if batches_done else train_loader
        if resumed_rng is not None:  # the generators as they were when the checkpoint was written
            checkpoints.set_rng_state(resumed_rng)
            resumed_rng = None
        accumulated, accumulated_parts = [], []
        for batch in batches:
            if state.step >= total_steps:  # resumed from a checkpoint written as the budget ran out
                break
            batches_done += 1
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = task_loss = head.loss(outputs, batch)
                if loss is None:
                    raise PluginError(no_loss_message(config, engine, task, head, batch))
                if settings.aux_lm_weight:
                    loss = task_loss + settings.aux_lm_weight * outputs["lm_loss"]
                    accumulated_parts.append(torch.stack([task_loss.detach(), outputs["lm_loss"].detach()]))
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
            step_loss = float(accelerator.reduce(torch.stack(accumulated).float().mean(), "mean"))
            accumulated = []
            if not math.isfinite(step_loss):
                raise TrainingError(diverged_message(step_loss, state, output_dir))
            logs = {"step": state.step, "epoch": state.epoch + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
            if accumulated_parts:  # the joint objective's two terms, logged apart
                task_part, lm_part = accelerator.reduce(torch.stack(accumulated_parts).float().mean(0), "mean").tolist()
                logs.update(task_loss=task_part, lm_loss=lm_part)
                accumulated_parts = []
            metrics["train"].append(logs)
            tracking.log(accelerator, settings.report_to, "train", logs, state.step)
            notify("on_train_step", run=state, step=state.step, logs=logs)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=state.epoch + 1, refresh=False)
            if "dev" in features and settings.eval_every and state.step % settings.eval_every == 0:
                stop = evaluate_dev()
                if stop:
                    break
            if settings.checkpoint_every and state.step % settings.checkpoint_every == 0:
                save_checkpoint(state.epoch, batches_done)
            if state.step >= total_steps:  # the step budget (train.max_steps) is spent, maybe mid-epoch
                break
        if stop:
            break
        if "dev" in features and not settings.eval_every:
            stop = evaluate_dev()
            if stop:
                break
        batches_done = 0
        save_checkpoint(state.epoch + 1, 0)
    bar.close()
    if "dev" in features and settings.eval_every and (not metrics["dev"] or metrics["dev"][-1]["step"] != state.step) and not stop:
        evaluate_dev()  # the steps after the last periodic evaluation count too
    metrics["stopped_early"] = stop
    metrics["under_trained"] = diagnosis.under_training(metrics, epochs=settings.epochs, max_steps=settings.max_steps, schedule=config.optimizer.schedule)

    if "dev" not in features:  # without a dev set, the final weights are the result
        save_best()
    # The test score after fine-tuning is measured on the saved best model, loaded back as a user would.
    if features.keys() & {"test", "previous_test"}:
        best_model = finetuning.load_trained_model(head, config, task.head_spec(), output_dir / "model").to(accelerator.device)
        for split in ("test", "previous_test"):
            if split in features:
                metrics[split]["after"] = evaluate(split, best_model)
                tracking.log(accelerator, settings.report_to, split, metrics[split]["after"], state.step)
                notify("on_evaluate", run=state, split=f"{split}.after", metrics=metrics[split]["after"])

    if main_process:
        dump_yaml(config.to_dict(), output_dir / CONFIG_FILE)
        clock()
        write_json(output_dir / METRICS_FILE, metrics)
        shutil.rmtree(output_dir / checkpoints.CHECKPOINTS_DIR, ignore_errors=True)  # a finished run is not resumed
        counts = {name: split.examples for name, split in features.items()}
        if streamed is not None:
            counts["train"] = streamed.examples if streamed.examples is not None else train_examples.known_count()
        run_manifest = manifest(config, engine, task, counts, data_files, data_hashes, accelerator.num_processes)
        if tokenizer_record:
            run_manifest["tokenizer"] = tokenizer_record
        run_manifest["components"]["optimizer"]["lr"] = optimizer_config.lr  # the rate used, also when config.yaml says auto
        if lr_choice is not None:
            run_manifest["components"]["optimizer"]["lr_find"] = {key: lr_choice[key] for key in ("lr", "method", "steps")}
        if ethics_report is not None:
            run_manifest["ethics"] = {"policies": [name for name, _ in policy_specs(config.ethics)], "training_data": ethics_report, "audit_log": ETHICS_AUDIT_FILE}
        write_json(output_dir / MANIFEST_FILE, run_manifest)
        if metrics["train"]:
            plot_training_curve(metrics, output_dir / CURVE_FILE, stopping.metric)
    finish_tracking()
    accelerator.wait_for_everyone()
    notify("on_train_end", run=state, metrics=metrics)
    return Run(output_dir, config, metrics, main_process)


def lr_schedule(optimizer, schedule: str, *, warmup: int, total: int, decay: int = 0):
    """The learning-rate multiplier per step as a torch ``LambdaLR``: a linear warmup over ``warmup``
    steps, then ``linear`` decay to 0, ``cosine`` decay to 0, ``constant``, or ``wsd``: constant,
    then linear to 0 over the last ``decay`` steps. The formulas are transformers' ``get_scheduler``'s
    (a checkpoint of either resumes under the other); not that function itself, because importing it
    imports peft: 2-3 s at the start of every process."""
    import torch

    def multiplier(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "wsd":
            return 1.0 if step < total - decay else max(0.0, (total - step) / max(1, decay))
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def measured_precision(model, head, first_batches, checkpoint: Path | None, accelerator, *, total_batches: int) -> dict:
    """``train.mixed_precision: auto``: what :func:`lccore.precision.choose_training_precision`
    finds on the first batches (measured once, by the main process, for every process), or the
    choice a resumed run made before (a run keeps one precision from start to end)."""
    from accelerate.utils import broadcast_object_list

    from . import precision

    if checkpoint is not None:
        earlier = json.loads((checkpoint / checkpoints.LOOP_FILE).read_text(encoding="utf-8"))["metrics"].get("precision")
        if earlier:
            return earlier
    choice = [None]
    if accelerator.is_main_process:
        if total_batches < precision.MIN_TRAINING_STEPS:
            choice[0] = {"chosen": "fp32", "reason": f"{total_batches} training batches: too few to be worth measuring"}
        else:
            batches = [batch for _, batch in zip(range(precision.MEASURED_BATCHES), first_batches)]
            found = precision.choose_training_precision(model.to(accelerator.device), batches, head.loss, accelerator.device)
            found["reason"] = (f"bf16 {found['bf16_speedup']:.2f}x the speed of fp32, gradient cosine {found['gradient_cosine']:.4f}, "
                               f"loss difference {found['loss_difference']:.2%}")
            choice[0] = found
    if accelerator.num_processes > 1:
        broadcast_object_list(choice, from_process=0)
    return choice[0]


def found_lr(model, make_optimizer, batches, loss_of, checkpoint: Path | None, accelerator, *, steps: int, total_steps: int,
             max_grad_norm: float | None, progress: bool) -> dict:
    """``optimizer.lr: auto``: the record of :func:`lccore.lr_find.range_test`, run by the main
    process and sent to the others (every process trains with the same rate), or the pick a
    resumed run made when it started (the test is not run again)."""
    from accelerate.utils import broadcast_object_list

    if checkpoint is not None:
        earlier = json.loads((checkpoint / checkpoints.LOOP_FILE).read_text(encoding="utf-8"))["metrics"].get("lr_find")
        if earlier:
            return earlier
    if steps < lr_find.MIN_STEPS:
        raise ConfigError(f"optimizer.lr: auto needs a range test of at least {lr_find.MIN_STEPS} steps, and this run has {total_steps} optimiser steps: give a rate")
    choice = [None]
    if accelerator.is_main_process:
        with contextlib.closing(batches):
            choice[0] = lr_find.range_test(
                model.to(accelerator.device), make_optimizer, batches, loss_of, steps=steps, grad_accum=accelerator.gradient_accumulation_steps,
                max_grad_norm=max_grad_norm, device=accelerator.device, autocast=accelerator.autocast, progress=progress,
            )
    if accelerator.num_processes > 1:
        broadcast_object_list(choice, from_process=0)
    return choice[0]


class TrainingExamples:
    """The training split as a view read afresh on each pass: its files through ``task.read``,
    cleaned by the ethics policies, then (:meth:`with_replay`) an earlier run's replayed examples.
    Never held whole, so a corpus of any size trains in flat memory. The first complete pass
    records the policies' decisions (``report`` and the audit log); later passes only apply them.

    ``Task.fit`` gets this view: it iterates it (``len`` and indexing work, by reading again)."""

    def __init__(self, task, files, policies=None, audit=None, *, progress: bool = False):
        self.task, self.files, self.policies, self.audit, self.progress = task, files, policies, audit, progress
        self.report = ethics.new_filter_report(policies) if policies else None
        self.replayed: list = []
        self._count: int | None = None

    def __iter__(self):
        examples = stream_examples(self.task, self.files)
        recording = self._count is None and self.policies is not None
        if self.policies:
            if recording:  # a pass given up half-way recorded half: start the records again
                self.report = ethics.new_filter_report(self.policies)
                self.audit.start_again()
            examples = ethics.filter_stream(self.policies, self.task, examples, self.report if recording else None, self.audit if recording else None)
        count = 0
        with contextlib.closing(progress_bar(total=None, desc="read train", unit="ex", enabled=self.progress and self._count is None, delay=1.0)) as bar:
            for example in examples:
                count += 1
                bar.update()
                yield example
        self._count = count

    def __len__(self) -> int:
        if self._count is None:
            for _ in self:
                pass
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(itertools.islice(self, *index.indices(len(self))))
        index = index + len(self) if index < 0 else index
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(itertools.islice(self, index, None))

    def known_count(self) -> int | None:
        """The number of examples, when a pass has counted them (for progress bars)."""
        return None if self._count is None else self._count + len(self.replayed)

    def source_bytes(self) -> int:
        """The size of the split's files (a progress bar's total before the examples are counted)."""
        from .data import data_files

        return sum(os.path.getsize(path) for path in data_files(self.files))

    def with_replay(self):
        """One pass over the split and then the replayed examples: what is tokenised."""
        return itertools.chain(self, self.replayed)

    def texts(self):
        """A re-iterable of the examples' ``text`` (what a tokenizer built from scratch learns from)."""
        examples = self

        class Texts:
            def __iter__(self):
                return (getattr(example, "text", "") or "" for example in examples)

        return Texts()

    def replay_sha256(self) -> str | None:
        """What the replayed examples are, for the features' cache key."""
        import hashlib

        if not self.replayed:
            return None
        return hashlib.sha256("\n".join(getattr(e, "where", repr(e)) for e in self.replayed).encode()).hexdigest()


FITTED_DIR = "fitted"
#: torch's random state as a scratch build left it (raw bytes), kept with the cached model.
SCRATCH_RNG_FILE = "torch_rng_state.bin"


def read_fitted(cache: Path | None, key: str) -> dict | None:
    """The task state (``Task.head_spec``) fitted on these exact files before, if cached."""
    if cache is None:
        return None
    try:
        state = json.loads((cache / FITTED_DIR / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state.get("task_state") if isinstance(state, dict) and state.get("format") == FORMAT else None


def write_fitted(cache: Path | None, key: str, task_state: dict) -> None:
    if cache is None:
        return
    folder = cache / FITTED_DIR
    with contextlib.suppress(OSError, TypeError, ValueError):  # a cache that cannot be written only costs a pass next time
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{key}.json.{os.getpid()}.partial"
        partial.write_text(json.dumps({"format": FORMAT, "task_state": task_state}), encoding="utf-8")
        partial.replace(folder / f"{key}.json")


def starting_model(config: RunConfig, task, head, previous: PreviousRun | None, train_examples: "TrainingExamples", workdir: Path, cache: Path | None, data_key: str):
    """(model, tokenizer, source): an earlier run's model and head (``train.init_from``), a model
    built from scratch (``model: {architecture: ...}``; cached with the tokenised data, since its
    tokenizer is trained on them), or a pretrained one with a new head."""
    from transformers import AutoTokenizer

    settings = config.train
    if previous is not None:
        source = str(previous.model_dir)
        with model_load_errors("train.init_from", source):
            return head.load(source), AutoTokenizer.from_pretrained(source), source
    source = config.model
    if isinstance(config.model, ScratchModelConfig):
        objective = getattr(task, "objective", None)
        if objective and scratch.ARCHITECTURES[config.model.architecture] != objective:
            raise ConfigError(
                f"model.architecture: {config.model.architecture} pretrains with {scratch.ARCHITECTURES[config.model.architecture]}, "
                f"not with task '{config.task.name}'"
            )
        if settings.lora is not None:
            raise ConfigError("train.lora: adapters need a pretrained model, not one built from scratch")
        texts = train_examples.texts()

        def build(directory: Path) -> str:
            return scratch.build(config.model, texts, directory, max_length=settings.max_length, seed=settings.seed)

        if cache is None:
            source = build(workdir / "scratch-model")
        else:
            import torch

            def build_and_keep_rng(directory: Path) -> None:
                build(directory)
                # Building seeds and draws from torch's generator; a run served from the cache
                # takes back the state the build left, so its dropout and masks are the same.
                (directory / SCRATCH_RNG_FILE).write_bytes(torch.get_rng_state().numpy().tobytes())

            key = fingerprint(data_key, unstructure(config.model), settings.max_length, settings.seed)
            source = cached_folder(cache / "scratch" / key, build_and_keep_rng)
            rng_state = (Path(source) / SCRATCH_RNG_FILE).read_bytes()
            torch.set_rng_state(torch.frombuffer(bytearray(rng_state), dtype=torch.uint8))
    with model_load_errors("model", source):
        return head.build(source, task.head_spec()), AutoTokenizer.from_pretrained(source), source


def check_max_length(model, tokenizer, max_length: int) -> None:
    """``train.max_length`` must fit the model's position embeddings (and the tokenizer's own
    limit, which knows the offsets some models, RoBERTa's family, keep back)."""
    config = next((m.config for m in model.modules() if hasattr(m, "config")), None)
    limits = [getattr(config, name) for name in ("max_position_embeddings", "n_positions") if isinstance(getattr(config, name, None), int)]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1 << 24:  # unset, it is a huge placeholder
        limits.append(tokenizer_limit)
    if limits and max_length > min(limits):
        raise ConfigError(f"train.max_length: {max_length} is more than this model takes ({min(limits)} positions); set it to at most {min(limits)}")


#: Every ethics decision on the training data, one JSON line each (no raw text).
ETHICS_AUDIT_FILE = "ethics_audit.jsonl"


def ethics_dropped_line(report: dict) -> str:
    """One line on what the ethics policies took out of the training data, per policy with reasons."""
    share = report["dropped"] / max(report["examples"], 1)
    per_policy = "; ".join(
        f"{name}: {counts['block']} blocked" + (f" ({', '.join(f'{r} x{n}' for r, n in sorted(counts['reasons'].items()))})" if counts["reasons"] else "")
        for name, counts in report["policies"].items()
        if counts["block"]
    )
    unredactable = f"; {report['dropped_unredactable']} could not be redacted" if report.get("dropped_unredactable") else ""
    return (f"ethics dropped {report['dropped']} of {report['examples']} training examples ({share:.1%}){unredactable}: {per_policy}; "
            f"each decision is in {ETHICS_AUDIT_FILE}, and 'lccore ethics check' shows what a policy does to a file")


class TrainingError(LccoreError, FloatingPointError):
    """Training cannot go on (the loss diverged)."""

    exit_status = 1


def no_loss_message(config: RunConfig, engine: Engine, task, head, batch: dict) -> str:
    """Why a training batch gave no loss, naming the plugin and the line of code to look at."""
    if "labels" not in batch:
        return (f"task '{config.task.name}' of plugin '{engine.plugin_of('task', config.task.name).name}': the training batch has no "
                f"'labels', so the model computed no loss; its encode ({defined_at(type(task).encode)}) must put each example's label "
                "in its feature as 'labels' (collate passes that key to the model)")
    return (f"head '{config.head.name}' of plugin '{engine.plugin_of('head', config.head.name).name}': loss() returned None for a batch "
            f"with 'labels' ({defined_at(type(head).loss)}); the model's forward must compute a loss from labels, or the head's loss() must")


def diverged_message(loss: float, state: RunState, output_dir: Path) -> str:
    newest = checkpoints.checkpoint_dirs(output_dir)
    kept = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written yet"
    return (
        f"training loss became {loss} at step {state.step} (epoch {state.epoch + 1}); {kept}; "
        "lower optimizer.lr or check the data, and train again"
    )


def find_checkpoint(output_dir: Path, config: RunConfig) -> Path | None:
    """The checkpoint ``--resume`` continues from; None (start afresh) when the run never wrote one."""
    if (output_dir / MANIFEST_FILE).exists():
        raise RunDirError(f"{output_dir}: this run already finished; nothing to resume")
    saved = output_dir / CONFIG_FILE
    if output_dir.is_dir() and user_entries(output_dir) and not saved.is_file():
        raise RunDirError(f"{output_dir}: not an lccore run directory (no {CONFIG_FILE}); nothing to resume")
    if saved.is_file():
        differences = config_differences(load_config(saved).to_dict(), config.to_dict())
        if differences:
            raise ConfigError(f"{saved}: the run was started with other settings ({'; '.join(differences)}); resume with the same config")
    found = checkpoints.newest_intact(output_dir, warn=lambda message: print(f"lccore: warning: {message}", file=sys.stderr, flush=True))
    if found is None:
        print(f"lccore: no intact checkpoint in {output_dir}: starting from the beginning", file=sys.stderr, flush=True)
    return found


def config_differences(old, new, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for name in list(old) + [n for n in new if n not in old]:
            out += config_differences(old.get(name), new.get(name), f"{key}.{name}" if key else name)
        return out
    return [] if old == new else [f"{key}: {old!r} then, {new!r} now"]


def check_resumable(folder: Path, loop: dict, data_hashes: dict) -> None:
    for split, digest in loop["data"].items():
        if data_hashes.get(split) != digest:
            raise ConfigError(f"task.{split}: the file changed since {folder} was written (its SHA-256 differs)")


def manifest(config: RunConfig, engine: Engine, task, counts: dict, data_files: dict, data_hashes: dict, processes: int) -> dict:
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
        "processes": processes,
        "model": unstructure(config.model),
        "components": {
            "task": used("task", config.task.name),
            "head": used("head", config.head.name),
            "optimizer": used("optimizer", config.optimizer.name),
        },
        "task_state": task.head_spec(),
        "data": {
            name: {"path": data_files[name], "sha256": data_hashes[name], "examples": counts.get(name)}
            for name in data_files
        },
        "plugins": [{k: p[k] for k in ("name", "distribution", "version", "status")} for p in engine.report()],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }


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
