"""Inference on a finished run: ``lccore.load(RUN_DIR).predict([...])``."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import deadline
from . import ethics as ethics_module
from . import finetuning
from . import precision as auto_precision
from .batching import sorted_batches
from .config import load_config, resolve
from .data import check_unicode
from .errors import ConfigError, LccoreError, RunDirError, model_load_errors
from .plugins import Engine
from .progress import progress_bar, without_hf_bars
from .rundir import CONFIG_FILE, MANIFEST_FILE, MODEL_DIR, check_run_dir


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


class Predictor:
    """A trained model with its task: predicts, and evaluates on labelled files.

    This is what a plugin (an explainer, a reasoner, a policy's judge) may use; the rest is private.

    Attributes: ``run_dir`` (the run directory), ``config`` (its resolved :class:`lccore.config.Config`),
    ``task`` (restored from the run: labels and options), ``head``, ``model`` (in eval mode, on
    ``device``), ``tokenizer``, ``device``, ``engine`` (the plugins that resolved the run: create
    other components from it), ``guard`` (the ethics policies: the run's ``ethics:`` list and any
    given to :func:`load`; :meth:`predict` and the reasoners apply them to inputs and outputs).

    Methods: :meth:`predict` / :meth:`predict_stream` (inputs as users give them, guarded),
    :meth:`predict_examples` (parsed examples, unguarded: what explainers compare against),
    :meth:`logits` (one batched forward pass over parsed examples: the raw scores an explainer
    perturbs and reads), :meth:`autocast` (the run's precision, for a plugin's own forward passes),
    :meth:`evaluate`, :meth:`explain` and :meth:`reasoner`."""

    def __init__(self, run_dir: Path, config, task, head, model, tokenizer, device, autocast_dtype=None, engine: Engine | None = None, guard=None):
        self.run_dir = run_dir
        self.config = config
        self.task = task
        self.head = head
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        #: The engine that resolved the run: explainers come from its plugins.
        self.engine = engine
        #: What ``precision="auto"`` measured and chose (None until it has).
        self.precision_choice: dict | None = None
        #: The ethics policies on inputs and outputs (an empty guard lets everything through).
        self.guard = guard if guard is not None else ethics_module.Guard()

    def autocast(self):
        """A context for forward passes in the precision the run was loaded with (``precision=``):
        bf16/fp16 autocast, or nothing for fp32 (and for ``auto`` until it has measured)."""
        if self.autocast_dtype == "auto" or self.autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


    def _run(self, examples, *, batch_size, progress, desc, with_loss=False, features=None):
        _check_batch_size(batch_size)
        if features is None:
            features = self.task.encode(examples, self.tokenizer, self.config.train.max_length)
        return run_model(
            self.model, self.task, self.tokenizer, features,
            batch_size=batch_size or self.config.train.eval_batch_size, device=self.device,
            autocast=self.autocast, loss_fn=self.head.loss if with_loss else None, progress=progress, desc=desc,
        )

    def predict(self, inputs: Iterable[Any], *, batch_size: int | None = None, progress: bool = False, guard: bool = True) -> list[dict]:
        """One prediction record per input (a string, or a JSON-like object the task accepts), in
        order. The ethics policies apply unless ``guard=False``: an input they block gets a refusal
        record ``{"refused": true, "stage", "decision", "reasons"}`` instead of a prediction."""
        examples = [self.parse_input(value, f"input {i + 1}") for i, value in enumerate(inputs)]
        return self.predict_parsed(examples, batch_size=batch_size, progress=progress, guard=guard)

    def parse_input(self, value: Any, where: str):
        """One input as the task's example, or a one-line :class:`~lccore.errors.DataError` naming ``where``."""
        check_unicode(value, where)
        return self.task.parse_input(value, where)

    def predict_parsed(self, examples: list, *, batch_size: int | None = None, progress: bool = False, guard: bool = True) -> list[dict]:
        """Like :meth:`predict`, for examples already parsed by ``task.parse_input``."""
        run = lambda admitted: self.predict_examples(admitted, batch_size=batch_size, progress=progress)  # noqa: E731
        return self.guard.predict(self.task, examples, run) if guard else run(examples)

    def predict_stream(self, inputs: Iterable[Any], *, batch_size: int | None = None, window: int | None = None, guard: bool = True,
                       parsed: bool = False) -> Iterator[dict]:
        """One record per input, in input order, like :meth:`predict`, but ``window`` inputs at a
        time (default :data:`PREDICT_WINDOW`): each window is parsed, length-sorted into batches,
        predicted and given back before the next is read, so memory is bounded by the window, not
        by the input. ``parsed=True``: the inputs are examples already parsed by ``task.parse_input``."""
        from .data.features import batched

        window = window or PREDICT_WINDOW
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 1 << 20:
            raise ConfigError(f"window: expected an integer from 1 to {1 << 20}, got {window!r}")
        done = 0
        for chunk in batched(inputs, window):
            examples = chunk if parsed else [self.parse_input(value, f"input {done + i + 1}") for i, value in enumerate(chunk)]
            yield from self.predict_parsed(examples, batch_size=batch_size, guard=guard)
            done += len(chunk)

    def predict_examples(self, examples: list, *, batch_size: int | None = None, progress: bool = False) -> list[dict]:
        """The model's predictions for parsed examples, with no ethics policies (the building block
        of :meth:`predict`, the explainers and the bias audit)."""
        if not examples:
            return []
        if self.autocast_dtype == "auto" and len(examples) >= AUTO_MIN_INPUTS:
            self.choose_precision(examples, batch_size=batch_size)
        elif self.autocast_dtype == "auto" and self.precision_choice is None:  # said, not silent; a larger call still measures
            self.precision_choice = {"chosen": "fp32", "measured_on": 0, "reason": f"{len(examples)} inputs, fewer than {AUTO_MIN_INPUTS}: not worth measuring"}
        predictions, _ = self._run(examples, batch_size=batch_size, progress=progress, desc="predict")
        return predictions

    def logits(self, examples: list, *, batch_size: int | None = None) -> list:
        """The model's ``logits`` for parsed examples, in one batched pass: ``task.encode`` ->
        length-sorted batches -> ``task.collate`` -> ``device`` -> the run's precision ->
        ``task.forward``, without gradients and with no ethics policies. One float32 CPU tensor per
        feature, in the order ``encode`` made them (one per example for tasks that make one
        feature an example, as text classification, NER and relation extraction do): ``[classes]``
        for a sequence-level head, ``[tokens, classes]`` for a token-level one, cut to the
        feature's own tokens (no padding). An explainer varies the examples (``task.with_texts``)
        and reads how these scores move."""
        import torch


        _check_batch_size(batch_size)
        examples = list(examples)
        if not examples:
            return []
        features = self.task.encode(examples, self.tokenizer, self.config.train.max_length)
        lengths = [len(f["input_ids"]) for f in features]
        left_padded = getattr(self.tokenizer, "padding_side", "right") == "left"
        results: list = [None] * len(features)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for indices in sorted_batches(lengths, batch_size or self.config.train.eval_batch_size):
                    deadline.check()  # a time limit (the server's) stops the work between batches
                    batch = self.task.collate([features[i] for i in indices], self.tokenizer)
                    batch = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
                    with self.autocast():
                        outputs = self.task.forward(self.model, batch)
                    scores = getattr(outputs, "logits", None)
                    if scores is None:
                        raise ConfigError(f"logits: the '{self.config.task.name}' model's outputs have no 'logits' ({type(outputs).__name__})")
                    scores = scores.detach().float().cpu()
                    padded = batch["input_ids"].shape[1]
                    for row, index in enumerate(indices):
                        value = scores[row]
                        if value.dim() >= 2 and value.shape[0] == padded:  # token-level: drop the padding
                            value = value[padded - lengths[index]:] if left_padded else value[: lengths[index]]
                        results[index] = value
        finally:
            self.model.train(was_training)
        return results

    def choose_precision(self, examples: list, *, batch_size: int | None = None) -> dict:
        """Measure fp32 and bf16 autocast on (up to) the first :data:`AUTO_SAMPLE` examples and keep
        bf16 when it is at least :data:`lccore.precision.MIN_SPEEDUP` times faster **and** its
        predictions agree with fp32's (same labels, entities, spans; scores within 0.05) on at least
        :data:`lccore.precision.MIN_AGREEMENT` of them. The measurement is kept in :attr:`precision_choice`."""
        import time

        import torch

        sample = examples[:AUTO_SAMPLE]
        timings, outputs = {"fp32": [], "bf16": []}, {}
        for _ in range(2):  # interleaved rounds; the best of each is kept (the first warms up)
            for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                self.autocast_dtype = dtype
                start = time.perf_counter()
                outputs[name], _ = self._run(sample, batch_size=batch_size, progress=False, desc="precision")
                timings[name].append(time.perf_counter() - start)
        agree = sum(auto_precision.agrees(a, b) for a, b in zip(outputs["fp32"], outputs["bf16"])) / len(sample)
        speedup = min(timings["fp32"]) / min(timings["bf16"])
        chosen = "bf16" if speedup >= auto_precision.MIN_SPEEDUP and agree >= auto_precision.MIN_AGREEMENT else "fp32"
        self.autocast_dtype = torch.bfloat16 if chosen == "bf16" else None
        self.precision_choice = {"chosen": chosen, "bf16_speedup": round(speedup, 2), "agreement": round(agree, 4), "measured_on": len(sample)}
        return self.precision_choice

    def use_precision(self, chosen: str) -> None:
        """Predict in ``chosen`` ("fp32" or "bf16"), as ``precision="auto"`` chose before (a resumed
        prediction keeps the choice the interrupted one made)."""
        import torch

        self.autocast_dtype = torch.bfloat16 if chosen == "bf16" else None

    def can_generate(self) -> bool:
        """Whether the run's model writes text (``model.generate``): a generative LM or a seq2seq
        model, possibly wrapped (``.module`` under data parallelism, ``.task_model`` with an LM aux loss)."""
        for candidate in (self.model, getattr(self.model, "module", None), getattr(self.model, "task_model", None)):
            check = getattr(candidate, "can_generate", None)
            if callable(check) and check():
                return True
        return False

    def reasoner(self, name: str, **options):
        """The registered reasoner ``name`` (e.g. ``"generate"``) built with ``options``, answering
        with this run's model behind its ethics policies: ``.answer(query)``,
        ``.answer_batch(queries)`` and ``.stream(query)``."""
        engine = self.engine or Engine(disable=self.config.plugins.disable)
        return self.guard.wrap(engine.create("reasoner", name, options, key=f"reasoner.{name}"), predictor=self)

    def explain(self, texts: Iterable[Any], explainer: str = "shap", **options) -> list[dict]:
        """Attribution records for ``texts`` (strings or objects the task accepts) from the
        registered ``explainer`` (``shap``, ``integrated_gradients``, ``attention``, ``random``
        with the first-party ``explain`` plugin), built with ``options`` (e.g. ``target="positive"``,
        ``n_steps=32``): one record per text and explained target, each word with its score."""
        if isinstance(texts, (str, dict)):
            texts = [texts]
        engine = self.engine or Engine(disable=self.config.plugins.disable)
        return engine.create("explainer", explainer, options, key=f"explainer.{explainer}").explain(self, list(texts))

    def evaluate(self, path: str | Path | list, *, batch_size: int | None = None, progress: bool = False) -> dict:
        """The task's metrics (and the loss) on a labelled data file, streamed: the file is
        tokenised a chunk at a time into the cache (``data.cache`` of the run's config; evaluating
        the same file again does not tokenise), and each chunk's predictions go into the task's
        :meth:`~lccore.Task.metrics_accumulator` with its examples, read again from the file. Memory
        is bounded by a chunk for tasks whose metrics are sums (the first-party ones)."""
        from .data import data_files, split_sha256
        from .data.features import CHUNK_EXAMPLES, batched, cache_root, encoding_fingerprint, fingerprint, split_features, stream_examples, task_fingerprint

        max_length = self.config.train.max_length
        # the key training gave its evaluation splits: a run's dev or test file is already cached
        task_key = task_fingerprint(self.config.task.name, self.task, self.config.task.options)
        files = data_files(path)  # one file, or a split of several (a run's own test split may be a list)
        key = fingerprint(encoding_fingerprint(task_key, self.task, self.tokenizer, max_length), "eval", split_sha256(path))
        features = split_features(self.task, lambda: stream_examples(self.task, files), tokenizer=self.tokenizer, max_length=max_length,
                                  key=key, name=str(files[0]) if len(files) == 1 else f"{len(files)} files", cache=cache_root() if self.config.data.cache else None, progress=progress,
                                  num_proc=self.config.data.num_proc)
        accumulator = self.task.metrics_accumulator()
        loss_total, scored_total = 0.0, 0
        bar = progress_bar(total=features.examples, desc="evaluate", unit="ex", enabled=progress)
        try:
            # the features' chunks were encoded from these examples, CHUNK_EXAMPLES at a time, in file order
            for chunk, examples in zip(features.chunks(), batched(stream_examples(self.task, files), CHUNK_EXAMPLES)):
                per_chunk, loss, scored = run_chunks(
                    self.model, self.task, self.tokenizer, features, chunks=[chunk], batch_size=batch_size or self.config.train.eval_batch_size,
                    device=self.device, autocast=self.autocast, loss_fn=self.head.loss, progress=False,
                )
                accumulator.update(per_chunk[0], examples)
                if loss is not None and scored:
                    loss_total, scored_total = loss_total + loss * scored, scored_total + scored
                bar.update(len(examples))
        finally:
            bar.close()
        result = accumulator.compute()
        if scored_total:
            result["loss"] = loss_total / scored_total
        return result


#: Inputs read, predicted (length-sorted within) and written at a time by streamed prediction.
PREDICT_WINDOW = 4096
AUTO_SAMPLE = 64  # examples measured by precision="auto"
AUTO_MIN_INPUTS = 128  # fewer inputs than this are not worth measuring: fp32


def load(run_dir: str | Path, *, engine: Engine | None = None, device: str | None = None, precision: str = "fp32",
         ethics: list = (), audit_log: str | Path | None = None) -> Predictor:
    """Load a run directory written by :func:`lccore.train` for prediction and evaluation.

    ``precision="bf16"`` runs the model under bfloat16 autocast (faster on CPUs with bf16 units);
    ``precision="auto"`` measures both on the first large prediction call and keeps bf16 only when
    it is faster and agrees with fp32 (see :meth:`Predictor.choose_precision`).
    The run's ``ethics:`` policies, then ``ethics`` (more policy names or mappings), guard
    :meth:`Predictor.predict` and the reasoners; ``audit_log`` is the JSONL file their decisions
    are appended to (hashes, never the text; default: none kept)."""
    import torch
    from transformers import AutoTokenizer

    run_dir = check_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    engine = engine or Engine(disable=config.plugins.disable)
    manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    # each component from the plugin that gave it in training; no optimizer (inference builds none)
    config, task, head = resolve(config, engine, recorded=manifest.get("components", {}))
    spec = manifest["task_state"]
    task.restore(spec)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with model_load_errors("model", run_dir / MODEL_DIR), without_hf_bars():
        model = finetuning.load_trained_model(head, config, spec, run_dir / MODEL_DIR).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(run_dir / MODEL_DIR)
    check_tokenizer_record(task, tokenizer, manifest.get("tokenizer"), run_dir / MODEL_DIR)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": "auto"}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {', '.join(dtypes)}, got {precision!r}")
    guard = ethics_module.Guard.build(list(config.ethics) + list(ethics), engine=engine, audit_log=audit_log)
    return Predictor(run_dir, config, task, head, model, tokenizer, device, dtypes[precision], engine=engine, guard=guard)


def check_tokenizer_record(task, tokenizer, recorded: dict | None, where: Path) -> None:
    """Refuse a run whose tokenizer no longer gives the record the run trained with (a chat
    template edited or replaced: prompts would be rendered unlike the training data)."""
    if not recorded:  # a run trained before records were kept, or a task with nothing to record
        return
    advice = "prompts would not look like the training data. Put the run's own tokenizer files back, or train again with this tokenizer"
    try:
        now = task.tokenizer_record(tokenizer) if hasattr(task, "tokenizer_record") else {}
    except LccoreError as exc:  # the files now hold what training would have refused
        raise ConfigError(f"{where}: the tokenizer is not the one the run was trained with ({exc}); {advice}") from None
    for key, was in recorded.items():
        if now.get(key) != was:
            shown = lambda value: f"sha256 {value['sha256'][:12]}" if isinstance(value, dict) and "sha256" in value else repr(value)  # noqa: E731
            differs = (f"({shown(now.get(key))}) is not the one the run was trained with ({shown(was)}, kept in manifest.json)"
                       if shown(now.get(key)) != shown(was) else "differs from the one kept in manifest.json (whose record was edited)")
            raise ConfigError(f"{where}: the tokenizer's {key.replace('_', ' ')} {differs}; {advice}")


def read_prediction_inputs(path: str) -> Iterable[tuple[str, Any]]:
    """("where", value) rows from a JSONL file, ``-`` (stdin), a pipe or a device, read once:
    each row a JSON string or object."""
    from .data import STDIN, read_jsonl

    where = STDIN if path == "-" else path
    yield from ((f"{where}:{n}", value) for n, value in read_jsonl(path, once=True))


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1 << 20):
        raise ConfigError(f"batch_size: expected an integer from 1 to {1 << 20}, got {batch_size!r}")


def export_merged(run_dir, output_dir, *, overwrite: bool = False) -> Path:
    """Write a LoRA run as a complete run directory whose ``model/`` is the plain model, the
    adapter merged into the base weights (``lccore.load`` and ``AutoModel...`` both load it)."""
    from .rundir import RunDir
    from .rundir import CURVE_FILE, METRICS_FILE, save_model_atomically
    from .typed import dump_yaml, read_yaml

    run_dir = check_run_dir(run_dir)
    if not finetuning.is_lora_model_dir(run_dir / MODEL_DIR):
        raise RunDirError(f"{run_dir}: not a LoRA run (no {MODEL_DIR}/{finetuning.ADAPTER_CONFIG}); its model already loads on its own")
    if Path(output_dir).resolve() == run_dir.resolve():
        raise RunDirError(f"{output_dir}: the export must go to another directory than the run")
    with RunDir(output_dir, overwrite=overwrite) as target:  # replaces only a run lccore wrote
        target.clear()
        output_dir = target.path
        predictor = load(run_dir, device="cpu")
        merged = predictor.model.merge_and_unload()
        save_model_atomically(merged, predictor.tokenizer, output_dir)
        config = read_yaml(run_dir / CONFIG_FILE)
        config["train"]["lora"] = None
        dump_yaml(config, output_dir / CONFIG_FILE)
        for name in (MANIFEST_FILE, METRICS_FILE, CURVE_FILE):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, output_dir / name)
    return output_dir
