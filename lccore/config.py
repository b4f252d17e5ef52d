"""Run configuration: the typed, validated attrs classes a run config (YAML) is mapped onto.

Only ``model`` and ``task`` are required; every other key has a default, and the resolved config
(defaults filled in, component names chosen) is what a run directory records. Each field's
``metadata["doc"]`` is its documentation: the config reference is generated from it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional, Union

import attrs

from .errors import ConfigError
# YAML and typed data live in lccore.typed; these names stay importable from lccore.config, where plugins find them
from .typed import doc, dump_yaml, read_yaml, safe_load_yaml, structure, unstructure  # noqa: F401

if TYPE_CHECKING:  # plugins.py never imports the config, so the config may use the engine
    from .plugins import Engine


@attrs.define
class TaskConfig:
    name: str = attrs.field(metadata=doc("Registered task name, e.g. `text_classification`."))
    train: Union[str, list[str], None] = attrs.field(default=None, metadata=doc(
        "Training data (needed by `lccore train`): a file, a glob (`corpus/*.txt`) or a list of files and globs, read in order; "
        "a file may be compressed (`train.jsonl.gz`, `.bz2`, `.xz`)."
    ))
    dev: Union[str, list[str], None] = attrs.field(default=None, metadata=doc("Development data (a file, glob or list): periodic evaluation, early stopping, best checkpoint."))
    test: Union[str, list[str], None] = attrs.field(default=None, metadata=doc("Test data (a file, glob or list), evaluated before and after fine-tuning."))
    options: dict = attrs.field(factory=dict, metadata=doc("Any other key of this section: the task's own options.", extra=True))


@attrs.define
class HeadConfig:
    name: Optional[str] = attrs.field(default=None, metadata=doc("Registered head name; default: the task's usual head."))
    options: dict = attrs.field(factory=dict, metadata=doc("Any other key of this section: the head's own options.", extra=True))


@attrs.define
class OptimizerConfig:
    name: str = attrs.field(default="adamw", metadata=doc("Registered optimiser name (`adamw`, `sgd`, ...)."))
    lr: Union[float, Literal["auto"]] = attrs.field(default=5e-5, metadata=doc(
        "Peak learning rate, or `auto`: a learning-rate range test of `lr_find_steps` steps before training picks it (a tenth of "
        "the rate at the loss's minimum); the model, data order and random state are put back first, so the run is the one "
        "`lr: <that rate>` gives. The pick is in `metrics.json` → `lr_find` and `manifest.json`, the curve in `lr_find.png`; "
        "`config.yaml` keeps `auto`. See docs/fine-tuning.md.", min=0.0,
    ))
    weight_decay: float = attrs.field(default=0.01, metadata=doc("Decoupled weight decay, not applied to biases and norm weights.", min=0.0))
    schedule: Literal["linear", "cosine", "constant", "wsd"] = attrs.field(default="wsd", metadata=doc(
        "Learning-rate decay after warmup: `linear` or `cosine` to 0 over the run, `constant`, or `wsd` (warmup-stable-decay: "
        "constant, then linear to 0 over the last `decay_ratio` of the steps)."
    ))
    warmup_ratio: Optional[float] = attrs.field(default=None, metadata=doc(
        "Fraction of the optimiser steps spent warming up linearly from 0. Null: 0 for a pretrained model (measured: warmup "
        "only cost it accuracy, benchmarks/defaults.py), 0.1 for one built from scratch (`model: {architecture: ...}`), whose "
        "first steps are unstable without it; the run's config.yaml records the value used.", min=0.0, max=1.0,
    ))
    decay_ratio: float = attrs.field(default=0.1, metadata=doc("With `schedule: wsd`: the fraction of the optimiser steps, at the end, over which the rate decays to 0.", min=0.0, max=1.0))
    lr_find_steps: int = attrs.field(default=100, metadata=doc(
        "Optimiser steps of the range test that `lr: auto` runs (from 1e-7 to 1, stopping once the loss diverges); at most the "
        "run's own steps.", min=10, max=10_000,
    ))
    layer_lr_decay: Optional[float] = attrs.field(
        default=None, metadata=doc("Layer-wise learning-rate decay: the head gets `lr`, each layer below it `layer_lr_decay` times the one above; null: one rate.", min=0.0, max=1.0)
    )
    options: dict = attrs.field(factory=dict, metadata=doc("Any other key of this section: the optimiser's own options (e.g. `momentum` for sgd).", extra=True))


@attrs.define
class EarlyStoppingConfig:
    metric: Optional[str] = attrs.field(default=None, metadata=doc("Dev metric that picks the best checkpoint; default: the task's main metric."))
    patience: Optional[int] = attrs.field(default=None, metadata=doc("Stop after this many evaluations without improvement; null: never stop early.", min=1))
    min_delta: float = attrs.field(default=0.0, metadata=doc("Smallest change that counts as an improvement.", min=0.0))


@attrs.define
class FreezeConfig:
    strategy: Literal["all", "top_k", "head_only", "embeddings_frozen", "gradual"] = attrs.field(
        default="all",
        metadata=doc(
            "What trains: `all` (full fine-tuning), `top_k` (the top `k` encoder layers and the head), "
            "`head_only`, `embeddings_frozen` (all but the embeddings), `gradual` (ULMFiT: the head first, "
            "then one more layer from the top each epoch)."
        ),
    )
    k: Optional[int] = attrs.field(default=None, metadata=doc("Layers trained by `top_k`.", min=0))


@attrs.define
class LoraConfig:
    r: int = attrs.field(default=8, metadata=doc("Rank of the low-rank update.", min=1, max=1 << 14))
    alpha: float = attrs.field(default=16.0, metadata=doc("Scaling numerator: the update is scaled by alpha / r.", min=0.0))
    dropout: float = attrs.field(default=0.05, metadata=doc("Dropout on the LoRA branch's input.", min=0.0, max=1.0))
    target_modules: Optional[list[str]] = attrs.field(
        default=None, metadata=doc("Module names that get adapters; null: peft's usual choice for the model type (e.g. query, value).")
    )


@attrs.define
class DropoutConfig:
    hidden: Optional[float] = attrs.field(default=None, metadata=doc("Dropout on embeddings and hidden states; null: the model's own.", min=0.0, max=1.0))
    attention: Optional[float] = attrs.field(default=None, metadata=doc("Dropout on attention probabilities; null: the model's own.", min=0.0, max=1.0))


@attrs.define
class TrainConfig:
    epochs: int = attrs.field(default=3, metadata=doc("Passes over the training data.", min=1, max=100_000))
    max_steps: Optional[int] = attrs.field(default=None, metadata=doc(
        "A budget of optimiser steps instead of whole epochs (pretraining): the run stops after this many, in the middle of an "
        "epoch if need be, and the learning-rate schedule decays over them; `epochs` is then ignored. Null: `epochs` passes.",
        min=1, max=1 << 40,
    ))
    batch_size: int = attrs.field(default=16, metadata=doc("Examples per optimiser step (before gradient accumulation).", min=1, max=1 << 20))
    eval_batch_size: int = attrs.field(default=64, metadata=doc("Examples per batch at evaluation and prediction.", min=1, max=1 << 20))
    max_length: int = attrs.field(default=128, metadata=doc("Longer inputs are truncated to this many tokens; at most the model's own limit (its position embeddings).", min=8, max=1 << 20))
    seed: int = attrs.field(default=42, metadata=doc("Seed for initialisation, shuffling and dropout.", min=0, max=2**32 - 1))
    grad_accum: int = attrs.field(default=1, metadata=doc("Micro-batches accumulated per optimiser step.", min=1, max=1 << 20))
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = attrs.field(default="no", metadata=doc(
        "Autocast precision under Accelerate (`bf16` also works on recent CPUs). `auto`: bf16 when a measurement on the first "
        "batches finds it faster and its loss and gradient agree with fp32's (the choice is in `metrics.json` → `precision`)."
    ))
    max_grad_norm: Optional[float] = attrs.field(default=1.0, metadata=doc("Gradient-norm clipping; null: no clipping.", min=0.0))
    eval_every: Optional[int] = attrs.field(default=None, metadata=doc("Evaluate on dev every this many optimiser steps; null: at the end of each epoch.", min=1))
    group_by_length: bool = attrs.field(default=True, metadata=doc("Batch training examples of similar length together (less padding)."))
    early_stopping: EarlyStoppingConfig = attrs.field(factory=EarlyStoppingConfig, metadata=doc("Best-checkpoint metric and patience."))
    freeze: FreezeConfig = attrs.field(factory=FreezeConfig, metadata=doc("Which parameters train; a bare string names the strategy."))
    lora: Optional[LoraConfig] = attrs.field(default=None, metadata=doc("LoRA adapters through peft (`{}` for the defaults); null: full weights train."))
    dropout: DropoutConfig = attrs.field(factory=DropoutConfig, metadata=doc("Dropout overrides."))
    label_smoothing: float = attrs.field(default=0.0, metadata=doc("Label smoothing of the cross-entropy loss (heads that use one).", min=0.0, max=1.0))
    aux_lm_weight: float = attrs.field(
        default=0.0, metadata=doc("Joint objective: add this times the model's own LM loss (masked or causal) on the task's inputs to the task loss (GPT-1: 0.5); 0: off.", min=0.0)
    )
    init_from: Optional[str] = attrs.field(
        default=None, metadata=doc("Continue from an earlier run's model and head (its run directory) instead of `model`, which may then be left out (the run records the earlier run's `model/` folder as its model); `--init-from` sets it.")
    )
    replay: float = attrs.field(
        default=0.0, metadata=doc("With init_from: add this fraction of the earlier run's training examples (sampled with the seed) to limit forgetting.", min=0.0, max=1.0)
    )
    checkpoint_every: Optional[int] = attrs.field(default=None, metadata=doc("Also write a resumable checkpoint every this many optimiser steps (one is written at each epoch's end).", min=1))
    keep_checkpoints: int = attrs.field(default=2, metadata=doc("Resumable checkpoints kept in `checkpoints/` (the newest); the best model is always in `model/`.", min=1, max=1000))
    gradient_checkpointing: bool = attrs.field(default=False, metadata=doc(
        "Recompute each layer's activations in the backward pass instead of keeping them: less memory (longer inputs, larger "
        "batches), about a third more compute, the same loss. See benchmarks/README.md."
    ))
    report_to: list[str] = attrs.field(factory=list, metadata=doc(
        "Experiment trackers that also get the run's config and metrics, through Accelerate (`tensorboard`, `mlflow`, `wandb`, ...); "
        "local ones write under the run's `trackers/` folder. `metrics.json` stays the record. See docs/runs.md."
    ))


@attrs.define
class DataConfig:
    cache: bool = attrs.field(default=True, metadata=doc(
        "Keep tokenised splits in lccore's cache (`$LCCORE_CACHE`, default `~/.cache/lccore`) so that a second run, a resume or an evaluation "
        "of the same data does not tokenise again; false: tokenise into the run's scratch folder, removed when it ends. See docs/data.md."
    ))
    streaming: bool = attrs.field(default=False, metadata=doc(
        "Stream the training split instead of caching it: each pass reads the files again, shuffles the examples through a seeded "
        "buffer (`shuffle_buffer`), tokenises and packs them on the fly with the cached path's layout, and never writes them to disk. "
        "For a corpus that should not be cached whole. Needs `train.max_steps` (a stream has no length); a resume continues at the exact "
        "example. Batches are not grouped by length. Evaluation splits are still cached."
    ))
    shuffle_buffer: int = attrs.field(default=10_000, metadata=doc(
        "Examples in the streamed training split's shuffle buffer (`streaming: true`): larger shuffles better and holds more in memory; "
        "1 keeps the files' order.", min=1, max=10_000_000,
    ))
    num_proc: int = attrs.field(default=1, metadata=doc(
        "Processes that tokenise a split not yet cached (forked workers, each encoding chunks of 1,000 examples while this process reads on; "
        "the features are the same for any number). Worth it when the task's encode is slow Python; a fast tokenizer already uses threads.",
        min=1, max=256,
    ))


@attrs.define
class PluginsConfig:
    disable: list[str] = attrs.field(factory=list, metadata=doc("Plugin names not to load for this run (as does `LCCORE_DISABLE_PLUGINS`)."))


@attrs.define
class ExplainConfig:
    probe: Optional[str] = attrs.field(
        default=None,
        metadata=doc(
            "Texts (JSONL: one string, or one object the task reads, per line) explained at dev evaluations; the records go to "
            "`RUN_DIR/explanations/step-N.json`, all steps side by side in `explanations/index.html`. Null: off. Needs the `explain` plugin."
        ),
    )
    explainers: list[str] = attrs.field(factory=lambda: ["integrated_gradients"], metadata=doc("Registered explainers run on the probe texts."))
    every: int = attrs.field(default=1, metadata=doc("Explain at the first dev evaluation and then every this many.", min=1, max=1 << 20))
    explainer_options: dict = attrs.field(factory=dict, metadata=doc("Options per explainer name, e.g. `{integrated_gradients: {n_steps: 32}}`."))


@attrs.define
class ScratchModelConfig:
    architecture: Literal["bert", "gpt2"] = attrs.field(metadata=doc("`bert` (encoder, masked LM) or `gpt2` (decoder, causal LM)."))
    hidden_size: int = attrs.field(default=256, metadata=doc("Width of the hidden states.", min=8, max=1 << 16))
    num_layers: int = attrs.field(default=4, metadata=doc("Transformer layers.", min=1, max=1024))
    num_heads: int = attrs.field(default=4, metadata=doc("Attention heads (must divide hidden_size).", min=1, max=1024))
    vocab_size: int = attrs.field(default=8000, metadata=doc("Size of the tokenizer trained on the training texts.", min=100, max=1 << 21))
    intermediate_size: Optional[int] = attrs.field(default=None, metadata=doc("Feed-forward width; null: 4 x hidden_size.", min=8, max=1 << 18))
    max_positions: Optional[int] = attrs.field(default=None, metadata=doc("Longest input the model takes; null: max(512, train.max_length).", min=8, max=1 << 20))
    tokenizer: Optional[str] = attrs.field(default=None, metadata=doc("An existing tokenizer (folder or hub id) instead of training one, e.g. a pretraining run's `model/`."))


@attrs.define
class RunConfig:
    model: Union[str, ScratchModelConfig] = attrs.field(
        metadata=doc("Pretrained model (a local Hugging Face directory or a hub id), or a mapping that builds one from scratch.")
    )
    task: TaskConfig = attrs.field(metadata=doc("The task, its data files and options; a bare string names the task."))
    head: HeadConfig = attrs.field(factory=HeadConfig, metadata=doc("The output layer; a bare string names it."))
    optimizer: OptimizerConfig = attrs.field(factory=OptimizerConfig, metadata=doc("Optimiser and schedule; a bare string names it."))
    train: TrainConfig = attrs.field(factory=TrainConfig, metadata=doc("Training loop settings."))
    data: DataConfig = attrs.field(factory=DataConfig, metadata=doc("How training and evaluation data are tokenised and kept."))
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig, metadata=doc("Plugin selection for this run."))
    explain: ExplainConfig = attrs.field(factory=ExplainConfig, metadata=doc("Explanations of probe texts during training."))
    ethics: list = attrs.field(
        factory=list,
        metadata=doc(
            "Ethics policies applied in order, each a registered name or `{name: ..., option: ...}` (e.g. `[pii, {name: blocklist, terms: [foo]}]`): "
            "training data is filtered or redacted before tokenisation, `lccore predict` checks inputs and outputs. See docs/ethics.md."
        ),
    )

    def to_dict(self) -> dict:
        return unstructure(self)


# --- files and overrides ------------------------------------------------------------------------


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides; values are parsed as YAML scalars (``1``, ``true``, ``[a, b]``)."""
    for override in overrides:
        dotted, sep, raw = override.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=1")
        try:
            value = safe_load_yaml(raw, f"--set {dotted}") if raw else ""
        except ConfigError as exc:
            if "invalid YAML" not in str(exc):
                raise
            value = raw
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("task", "head", "optimizer"):
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a section")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(source: str | Path | dict, overrides: list[str] = (), *, init_from: str | Path | None = None) -> RunConfig:
    """A validated :class:`RunConfig` from a YAML path or a dict; data paths become absolute,
    relative to the config file's folder (or the working directory for a dict). ``init_from`` (an
    earlier run's folder, as ``--init-from`` gives it) sets ``train.init_from``; with it the config
    needs no ``model``: the weights are that run's, and ``model`` records its ``model/`` folder."""
    if isinstance(source, dict):
        import copy

        data, base, origin = copy.deepcopy(source), Path.cwd(), "config"
    else:
        data, base, origin = read_yaml(source), Path(source).resolve().parent, str(source)
    data = apply_overrides(data, list(overrides))
    train_section = data.get("train") if isinstance(data, dict) else None
    if isinstance(data, dict) and "model" not in data and (init_from or (isinstance(train_section, dict) and train_section.get("init_from"))):
        data["model"] = "(the model of train.init_from)"  # replaced below, once init_from is resolved
    try:
        config = structure(RunConfig, data)
        policy_specs(config.ethics)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    for split in ("train", "dev", "test"):
        value = getattr(config.task, split)
        if value:
            setattr(config.task, split, _data_files(base, value, f"{origin}: task.{split}"))
    if init_from:
        config.train.init_from = str(Path(init_from).resolve())
    if config.train.init_from:
        config.train.init_from = str((base / config.train.init_from).resolve())
        # the weights come from the earlier run: its model folder is what this run starts from (a
        # `model:` the config also gives is not used, and is not recorded as if it were)
        config.model = str(Path(config.train.init_from) / "model")
    if config.ethics:
        config.ethics = resolve_paths(config.ethics, base, config.plugins.disable)
    if config.explain.probe:
        config.explain.probe = str((base / config.explain.probe).resolve())
    if isinstance(config.model, str) and not config.train.init_from:
        config.model = _local_or_hub(base, config.model)
    elif not isinstance(config.model, str) and config.model.tokenizer:
        config.model.tokenizer = _local_or_hub(base, config.model.tokenizer, "model.tokenizer")
    return config


def _data_files(base: Path, value: str | list[str], key: str) -> str | list[str]:
    """A split's data as absolute paths, relative to ``base``: one file stays a string; globs are
    expanded (sorted) and lists flattened into a list. A glob that matches no file is an error."""
    import glob

    if isinstance(value, str) and not glob.has_magic(value):
        return str((base / value).resolve())
    files = []
    for item in [value] if isinstance(value, str) else value:
        pattern = str(base / Path(item).expanduser())
        if glob.has_magic(item):
            matches = [m for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file()]
        else:
            matches = [pattern]
        if not matches:
            raise ConfigError(f"{key}: {item} matches no file")
        files += [str(Path(m).resolve()) for m in matches]
    if not files:
        raise ConfigError(f"{key}: an empty list; give a file, a glob or a list of them")
    return files


def _local_or_hub(base: Path, name: str, key: str = "model") -> str:
    """A path relative to the config file when such a folder exists, else the name (a hub id).
    A name only a path can be (``./x``, ``/x``, ``~/x``, ``a/b/c``) must exist."""
    local = base / name
    if not Path(name).is_absolute() and local.exists():
        return str(local.resolve())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")
    if looks_like_path:
        raise ConfigError(f"{key}: {name}: no such folder (a local model is a folder with config.json; a hub id looks like org/name)")
    return name


# --- resolving a config against an engine ----------------------------------------------------


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
        if config.optimizer.warmup_ratio is None:
            config.optimizer.warmup_ratio = 0.1 if isinstance(config.model, ScratchModelConfig) else 0.0

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


# --- the ethics: list ---------------------------------------------------------------------------


def policy_specs(items: list) -> list[tuple[str, dict]]:
    """``[name, {name: ..., option: ...}, ...]`` (the ``ethics:`` config list) as (name, options) pairs."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"ethics: expected a list of policies, got {items!r}")
    specs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            specs.append((item, {}))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            specs.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
        else:
            raise ConfigError(f"ethics[{i}]: expected a policy name or a mapping with 'name', got {item!r}")
    return specs


def resolve_paths(items: list, base: Path, disable: list[str] = ()) -> list:
    """``items`` with every option its policy's options class marks ``metadata={"path": True}``
    (an NER run, a classifier run) made absolute against ``base``, the folder of the file that
    named it, so a config means the same wherever it is run from. Unknown policies are left for
    :func:`build_policies` to report."""
    specs = policy_specs(items)
    if not any(isinstance(value, str) for _, options in specs for value in options.values()):
        return items  # nothing that could be a path: no need to look at the plugins
    from .plugins import Engine

    engine = Engine(disable=list(disable))
    resolved = []
    for item, (name, options) in zip(items, specs):
        if isinstance(item, str):
            resolved.append(item)
            continue
        owners = engine.owners("ethics_policy", name)
        fields = attrs.fields(owners[0].options) if len(owners) == 1 and attrs.has(owners[0].options) else ()
        for field in fields:
            value = options.get(field.name)
            if field.metadata.get("path") and isinstance(value, str) and value:
                options[field.name] = str((base / Path(value).expanduser()).resolve())
        resolved.append({"name": name, **options})
    return resolved
