"""A conformance kit for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

    from lccore.testing import check_plugin

    def test_my_plugin():
        check_plugin("lccore_my_plugin")   # a module, its name, or a distribution / entry-point name

:func:`check_plugin` loads the plugin on its own engine and runs every component it registers
through the contract of its kind on tiny models the kit builds itself (2 layers, 32 wide, a word
vocabulary, no download): a BERT encoder, a GPT-2 decoder and a T5 encoder-decoder. A task or head
runs on the first of them it accepts: one it refuses with :class:`lccore.ConfigError` (a causal LM
needs an end-of-text token, a seq2seq head an encoder-decoder) is passed over, and so is the BERT
when the head makes it generate (an encoder given a causal-LM head is no decoder). A task reads the
sample data its :meth:`~lccore.components.Task.example_data` writes and round-trips encode /
collate / forward / decode / gather / metrics; a head builds (with the task ``head_tasks`` names,
else one that uses it by default, else a task of its own plugin), trains one step, saves and
reloads with equal outputs;
an optimiser steps; an explainer returns one attribution per word (on the task ``explainer_tasks``
names, else text classification); an ethics policy returns valid
decisions; a KG backend adds, queries and looks up; a reasoner has ``answer``. It returns a
:class:`Report` and raises :class:`AssertionError` listing every failed check.

Pytest fixtures (``lccore_engine``, ``tiny_model_dir``) come with ``pytest -p lccore.testing.fixtures``.
Importing this module is cheap: torch and transformers load when a check needs them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import itertools
import math
import re
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

import attrs

from ..errors import ConfigError
from ..hookspecs import COMPONENT_KINDS
from ..plugins import ENTRY_POINT_GROUP, Engine

__all__ = ["ARCHITECTURES", "Check", "Report", "build_tiny_model", "check_plugin", "TINY_VOCABULARY"]

#: The words of the tiny model's vocabulary (besides the special tokens): enough for the sample
#: data of the first-party tasks; any other word becomes ``[UNK]``, which the checks allow.
TINY_VOCABULARY = (
    "great wonderful superb lovely brilliant delightful good awful terrible boring dreadful horrible dull bad "
    "the film was a plot and acting really quite book meal it very show "
    "alice bob carol dave erin paris london rome new york bos ##ton "
    "lives in visited met works at today with from went to . , where does live who ? nobody knows anything "
    "@ # * ^ per loc born heard of "
    "le un livre etait super ennuyeux vit bon"
).split()

#: The tiny models' architectures, in the order a component is tried on them.
ARCHITECTURES = ("encoder", "decoder", "encoder_decoder")

ETHICS_DECISIONS = ("allow", "flag", "redact", "block")
ETHICS_STAGES = ("training_data", "input", "output")


def build_tiny_model(directory, words: Iterable[str] = TINY_VOCABULARY, *, seed: int = 0, architecture: str = "encoder") -> str:
    """A 2-layer, 32-wide model with a word-level vocabulary of ``words``, saved in Hugging Face
    format under ``directory``; returns the path. Deterministic for a given seed.

    ``architecture``: ``encoder``, a BERT with its masked-LM head; ``decoder``, a GPT-2 (causal
    LM); ``encoder_decoder``, a T5. The decoder's and encoder-decoder's tokenizer ends a text with
    ``[SEP]``, its end-of-text token, and gives the model only ``input_ids`` and ``attention_mask``."""
    import torch
    from transformers import BertTokenizerFast

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture '{architecture}' is not one of {', '.join(ARCHITECTURES)}")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    ids = {token: i for i, token in enumerate(vocab)}
    if architecture == "encoder":
        from transformers import BertConfig, BertForMaskedLM

        tokenizer = BertTokenizerFast(vocab=ids, do_lower_case=True)
        config = BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128,
        )
        model_class = BertForMaskedLM
    else:
        tokenizer = BertTokenizerFast(
            vocab=ids, do_lower_case=True, bos_token="[CLS]", eos_token="[SEP]", model_input_names=["input_ids", "attention_mask"]
        )
        special = {"pad_token_id": ids["[PAD]"], "eos_token_id": ids["[SEP]"]}
        if architecture == "decoder":
            from transformers import GPT2Config, GPT2LMHeadModel

            config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=ids["[CLS]"], **special)
            model_class = GPT2LMHeadModel
        else:
            from transformers import T5Config, T5ForConditionalGeneration

            config = T5Config(
                vocab_size=len(vocab), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, feed_forward_proj="relu",
                decoder_start_token_id=ids["[PAD]"], **special,
            )
            model_class = T5ForConditionalGeneration
    torch.manual_seed(seed)
    Path(directory).mkdir(parents=True, exist_ok=True)
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


# --- the report ---------------------------------------------------------------------------------


@attrs.frozen
class Check:
    """One check of one component: ``status`` is ``pass``, ``fail`` or ``skip``."""

    kind: str
    name: str
    check: str
    status: str
    reason: str = ""

    def __str__(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.status.upper():4} {self.kind} '{self.name}' {self.check}{reason}"


@attrs.define
class Report:
    """Every check :func:`check_plugin` ran, in order.

    ``plugin``: the name checked; ``checks``: each :class:`Check` (``kind``, ``name``, ``check``,
    ``status`` — ``pass``, ``fail`` or ``skip`` — and ``reason``); ``failures`` (also ``failed``),
    ``passed`` and ``skipped``: the checks of that status; ``ok``: nothing failed; ``str(report)``:
    one line per check, as the kit prints it."""

    plugin: str
    checks: list[Check] = attrs.Factory(list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def failed(self) -> list[Check]:
        """The same as :attr:`failures` (the name ``passed`` and ``skipped`` suggest)."""
        return self.failures

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def passed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "pass"]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.status == "skip"]

    def __str__(self) -> str:
        head = f"lccore plugin check of '{self.plugin}': {len(self.passed)} passed, {len(self.failures)} failed, {len(self.skipped)} skipped"
        return "\n".join([head] + [f"  {c}" for c in self.checks])


class _Skip(Exception):
    """Raised inside a check: the check cannot run here (the reason says why)."""


# --- entry point --------------------------------------------------------------------------------


def check_plugin(
    plugin: Any,
    *,
    model: str | dict[str, str] | None = None,
    skip: dict[str, str] | Iterable[str] = (),
    options: dict[str, dict] | None = None,
    head_tasks: dict[str, str] | None = None,
    explainer_tasks: dict[str, str] | None = None,
    raise_on_failure: bool = True,
) -> Report:
    """Run every component ``plugin`` registers through the contract of its kind.

    ``plugin`` is a plugin object or module, an importable module name, or the name of an
    installed distribution or ``lccore`` entry point. ``model`` is the encoder model directory for
    the checks, or a dict of model directories by architecture (``encoder``, ``decoder``,
    ``encoder_decoder``); any not given is the kit's tiny one of that architecture, built in a
    temporary folder when a check first needs it. ``skip`` names components
    not to check, as ``"kind:name"`` (or ``"kind"`` for a whole kind), optionally mapped to a
    reason. ``options`` gives a component's options, keyed the same way (``"kg_backend:mine"``).
    ``head_tasks`` names the task to check a head with, by head name (``{"my_head":
    "text_classification"}``); by default a head is checked with a task that uses it as its
    ``default_head``, else with a task of its own plugin whose default head builds on the same
    tiny model. ``explainer_tasks`` names the task to check an explainer with, by explainer name
    (``{"occlusion": "headline_pair"}``): the task's default head on the tiny model explains the
    first two rows of the task's ``example_data``; by default an explainer explains two sentences
    of ``text_classification``.

    Returns the :class:`Report`; raises :class:`AssertionError` listing the failures unless
    ``raise_on_failure`` is false.
    """
    label, modules = _resolve(plugin)
    skip = dict(skip) if isinstance(skip, dict) else {key: "skipped by the caller" for key in skip}
    report = Report(label)
    engine = Engine(entry_points=False, plugins=modules, use_env=False)
    for info in engine.plugins.values():
        status = "pass" if info.status == "loaded" else "fail"
        report.checks.append(Check("plugin", info.name, "loads and registers", status, info.reason or ""))
    with tempfile.TemporaryDirectory(prefix="lccore-check-") as tmp, _quiet_transformers():
        context = _Context(engine, Path(tmp), model, options or {}, head_tasks or {}, explainer_tasks or {})
        for kind in COMPONENT_KINDS:
            for name in engine.names(kind):
                reason = skip.get(f"{kind}:{name}", skip.get(kind))
                if reason is not None:
                    report.checks.append(Check(kind, name, "contract", "skip", reason))
                    continue
                report.checks.extend(_run_checks(context, kind, name))
    if raise_on_failure and report.failures:
        raise AssertionError(
            f"plugin '{label}' failed {len(report.failures)} conformance check(s):\n"
            + "\n".join(f"  {c}" for c in report.failures)
        )
    return report


@contextlib.contextmanager
def _quiet_transformers():
    """The tiny model's load reports (missing head weights, by design) would bury the report."""
    import logging

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        hf_logging = None
    if hf_logging is not None:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if hf_logging is not None:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()


def _resolve(plugin) -> tuple[str, list]:
    if not isinstance(plugin, str):
        return getattr(plugin, "__name__", type(plugin).__name__), [plugin]
    wanted = _normalise(plugin)
    found = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        if entry_point.name == plugin or (dist is not None and _normalise(dist.name) == wanted):
            module = entry_point.load()
            if all(module is not m for m in found):
                found.append(module)
    if found:
        return plugin, found
    return plugin, [importlib.import_module(plugin)]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- shared state for the checks ----------------------------------------------------------------


class _Context:
    def __init__(self, engine: Engine, tmp: Path, model: str | dict | None, options: dict, head_tasks: dict, explainer_tasks: dict):
        self.engine = engine
        self.tmp = tmp
        given = model if isinstance(model, dict) else {} if model is None else {"encoder": model}
        unknown = sorted(set(given) - set(ARCHITECTURES))
        if unknown:
            raise ValueError(f"model: unknown architecture(s) {', '.join(unknown)}; use {', '.join(ARCHITECTURES)}")
        self._models = {key: str(value) for key, value in given.items()}
        self._tokenizers: dict[str, Any] = {}
        self._options = options
        self.head_tasks = head_tasks
        self.explainer_tasks = explainer_tasks
        self._full_engine = None
        self._counter = 0

    def model_of(self, architecture: str) -> str:
        if architecture not in self._models:
            self._models[architecture] = build_tiny_model(self.tmp / f"tiny-{architecture}", architecture=architecture)
        return self._models[architecture]

    def tokenizer_of(self, path: str):
        if path not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[path] = AutoTokenizer.from_pretrained(path)
        return self._tokenizers[path]

    @property
    def model(self) -> str:
        """The encoder (the tiny BERT unless the caller gave one)."""
        return self.model_of("encoder")

    @property
    def tokenizer(self):
        return self.tokenizer_of(self.model)

    @property
    def full_engine(self) -> Engine:
        """The installed plugins plus the checked one: heads and explainers need a task."""
        if self._full_engine is None:
            self._full_engine = Engine(use_env=False)
        return self._full_engine

    def directory(self, label: str) -> Path:
        self._counter += 1
        path = self.tmp / f"{self._counter}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}"
        path.mkdir(parents=True)
        return path

    def create(self, kind: str, name: str, engine: Engine | None = None):
        engine = engine or self.engine
        component = engine.component(kind, name)
        given = self._options.get(f"{kind}:{name}")
        if given is None:
            given = self._fill_required(component, kind, name)
        return engine.create(kind, name, given)

    def _fill_required(self, component, kind, name) -> dict:
        if component.options is None:
            return {}
        filled = {}
        for field in attrs.fields(component.options):
            if field.default is not attrs.NOTHING:
                continue
            if field.name in ("path", "directory", "dir", "store"):
                filled[field.name] = str(self.directory(f"{kind}-{name}-{field.name}") / "store")
            else:
                raise _Skip(f"needs the option '{field.name}'; pass options={{'{kind}:{name}': {{...}}}}")
        return filled

    def task_with_data(self, task_name: str, engine: Engine):
        """A fitted task, its examples (train split) and ``head_spec()``."""
        task = self.create("task", task_name, engine)
        paths = task.example_data(self.directory(f"data-{task_name}")) if hasattr(task, "example_data") else None
        if not paths:
            raise _Skip(f"task '{task_name}' provides no example_data(directory)")
        examples = list(task.read(paths["train"]))  # a list or a generator
        task.fit(examples)
        return task, examples, paths


def _run_checks(context: _Context, kind: str, name: str) -> list[Check]:
    results: list[Check] = []

    def record(check: str, function: Callable[[], Any]) -> bool:
        try:
            outcome = function()
        except _Skip as exc:
            results.append(Check(kind, name, check, "skip", str(exc)))
            return False
        except AssertionError as exc:
            results.append(Check(kind, name, check, "fail", str(exc) or "assertion failed"))
            return False
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            results.append(Check(kind, name, check, "fail", f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"))
            return False
        results.append(Check(kind, name, check, "pass", outcome if isinstance(outcome, str) else ""))
        return True

    CHECKS[kind](context, name, record)
    return results


# --- per-kind contracts -------------------------------------------------------------------------


def _check_task(context: _Context, name: str, record) -> None:
    state: dict = {}

    def builds():
        task = context.create("task", name)
        assert task.metric, "Task.metric is empty"
        assert task.metric in task.metric_names, f"metric '{task.metric}' is not in metric_names {task.metric_names}"
        assert isinstance(task.default_head, str) and task.default_head, "Task.default_head is empty"
        state["task"] = task

    if not record("builds with default options", builds):
        return

    def reads():
        engine = context.engine
        task, examples, paths = context.task_with_data(name, engine)
        assert isinstance(examples, list) and examples, f"read({paths['train']}) returned no examples"
        missing = [e for e in examples if not isinstance(getattr(e, "where", None), str)]
        assert not missing, f"{len(missing)} example(s) carry no 'where' (file:line) string"
        state.update(task=task, examples=examples, paths=paths)
        return f"{len(examples)} examples from {Path(paths['train']).name}"

    if not record("reads its example data", reads):
        return
    task, examples = state["task"], state["examples"]

    def head_spec():
        spec = task.head_spec()
        json.loads(json.dumps(spec))
        fresh = context.create("task", name)
        fresh.restore(spec)
        assert fresh.head_spec() == spec, "restore(head_spec()) does not give back the same head_spec()"
        state["spec"] = spec

    if not record("head_spec is JSON and restores", head_spec):
        return

    def round_trip():
        engine = context.engine if task.default_head in context.engine.names("head") else context.full_engine
        refusals = []
        for architecture, _, _, model, tokenizer in _tiny_models(context, task.default_head, engine, state["spec"], refusals):
            fresh = context.create("task", name)  # as a saved run is loaded: restored from head_spec()
            fresh.restore(state["spec"])
            try:
                outcome = _round_trip(fresh, model.eval(), tokenizer, examples[:4])
            except ConfigError as exc:
                refusals.append(f"{architecture}: {exc}")
                continue
            return f"{outcome} (tiny {architecture})"
        raise AssertionError(f"task with head '{task.default_head}' refused every tiny model: {'; '.join(refusals)}")

    record("encode/collate/decode/metrics round-trip", round_trip)


def _tiny_models(context: _Context, head_name: str, engine: Engine, spec: dict, refusals: list[str]):
    """``(architecture, path, head, model, tokenizer)`` for each tiny model the head builds on, in
    the order of :data:`ARCHITECTURES` (a fresh head each); a refusal (ConfigError) is noted in
    ``refusals`` and passed over."""
    for architecture in ARCHITECTURES:
        path = context.model_of(architecture)
        head = context.create("head", head_name, engine)
        try:
            model = head.build(path, spec)
        except ConfigError as exc:
            refusals.append(f"{architecture}: {exc}")
            continue
        if architecture == "encoder" and callable(getattr(model, "can_generate", None)) and model.can_generate():
            refusals.append("encoder: the head makes it generate (an encoder is no decoder)")
            continue
        yield architecture, path, head, model, context.tokenizer_of(path)


def _round_trip(task, model, tokenizer, sample) -> str:
    import torch

    features = task.encode(sample, tokenizer, 32)
    assert isinstance(features, list) and all(isinstance(f, dict) for f in features), "encode must return a list of dicts"
    # Fewer features than examples is allowed: a language-modelling task packs texts into blocks.
    assert features, f"encode gave no features for {len(sample)} examples"
    assert all("input_ids" in f for f in features), "a feature has no 'input_ids'"
    from lccore.data.features import NotStorable, stored_form

    try:  # what training and evaluation get back from the data layer's cache
        features = [stored_form(f) for f in features]
    except NotStorable as exc:
        raise AssertionError(f"features cannot be cached ({exc}): keep them to numbers, strings, lists and string-keyed dicts "
                             "(put what decode needs, e.g. the text, in the feature rather than the example object)") from None
    with torch.inference_mode():  # as evaluation collates and runs a batch
        batch = task.collate(features, tokenizer)
        assert isinstance(batch.get("input_ids"), torch.Tensor), "collate must return a dict with an 'input_ids' tensor"
        assert batch["input_ids"].shape[0] == len(features), "collate's batch size differs from the number of features"
        outputs = task.forward(model, batch)
    records = task.decode(outputs, batch, features)
    assert isinstance(records, list) and len(records) == len(features), (
        f"decode returned {len(records) if isinstance(records, list) else type(records).__name__} records for {len(features)} features"
    )
    json.dumps(records)
    gathered = task.gather(records, features)
    assert len(gathered) == len(sample), f"gather returned {len(gathered)} records for {len(sample)} examples"
    metrics = task.metrics(gathered, sample)
    assert isinstance(metrics, dict), "metrics must return a dict"
    missing = [m for m in task.metric_names if m not in metrics]
    assert not missing, f"metrics lacks {', '.join(missing)} (declared in metric_names)"
    bad = [k for k, v in _flatten(metrics) if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v)]
    assert not bad, f"metrics values must be numbers: {', '.join(bad)}"
    # `lccore evaluate` scores a file a chunk at a time through the accumulator: one example per
    # chunk must come to what metrics gives on all of them
    accumulator = task.metrics_accumulator()
    for record, example in zip(gathered, sample):
        accumulator.update([record], [example])
    streamed = dict(_flatten(accumulator.compute()))
    differ = [k for k, v in _flatten(metrics) if not (isinstance(streamed.get(k), (int, float)) and math.isclose(streamed[k], v, rel_tol=1e-6, abs_tol=1e-9))]
    assert not differ, f"metrics_accumulator, fed one example at a time, disagrees with metrics on {', '.join(differ)}"
    return f"{len(records)} records, {task.metric}={metrics[task.metric]:.3g}"


def _flatten(metrics: dict, prefix: str = ""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _head_subject(context: _Context, head_name: str) -> dict:
    """What the head check trains: the task ``head_tasks`` names for it, else a task that uses the
    head by default (from the checked plugin first), else a task of the checked plugin whose own
    default head builds on the same tiny model; that model, built by the head, and a training
    batch of the task's example data."""
    import torch

    candidates = []  # (task name, its engine, whether the head must work with it)
    if head_name in context.head_tasks:
        task_name = context.head_tasks[head_name]
        engine = next((e for e in (context.engine, context.full_engine) if task_name in e.names("task")), None)
        if engine is None:
            raise AssertionError(f"head_tasks names task '{task_name}', which is not installed")
        candidates.append((task_name, engine, True))
    else:
        seen = set()
        for engine in (context.engine, context.full_engine):
            for task_name in engine.names("task"):
                if task_name in seen:
                    continue
                seen.add(task_name)
                try:
                    task = context.create("task", task_name, engine)
                except Exception:  # only a probe for a task to pair the head with: that task's own check reports it
                    continue
                if task.default_head == head_name:
                    candidates.append((task_name, engine, True))
    if not candidates:  # a head no task defaults to: the tasks of its own plugin
        candidates = [(task_name, context.engine, False) for task_name in context.engine.names("task")]
    refusals: list[str] = []
    for task_name, engine, by_default in candidates:
        try:
            task, examples, _ = context.task_with_data(task_name, engine)
        except _Skip:
            continue
        spec = task.head_spec()
        tried: list[str] = []
        for architecture, path, head, model, tokenizer in _tiny_models(context, head_name, context.engine, spec, tried):
            if not by_default and not _default_head_builds_on(context, task, spec, architecture):
                tried.append(f"{architecture}: the task's own head '{task.default_head}' does not build on it")
                continue
            fresh = context.create("task", task_name, engine)
            fresh.restore(spec)
            torch.manual_seed(0)  # a masking collator draws at random
            try:
                batch = fresh.collate(fresh.encode(examples[:4], tokenizer, 32), tokenizer)
            except ConfigError as exc:
                tried.append(f"{architecture}: {exc}")
                continue
            return {"task_name": task_name, "head": head, "model": model, "tokenizer": tokenizer, "batch": batch, "architecture": architecture}
        if by_default:
            raise AssertionError(f"with task '{task_name}' it refused every tiny model: {'; '.join(tried)}")
        refusals.append(f"task '{task_name}': {'; '.join(tried)}")
    if not refusals:
        raise _Skip("no installed task with example_data uses it as its default_head, and no task of its plugin has example_data")
    raise _Skip(f"no task uses it as its default_head, and no task of its plugin works with it ({' | '.join(refusals)})")


def _default_head_builds_on(context: _Context, task, spec: dict, architecture: str) -> bool:
    engine = context.engine if task.default_head in context.engine.names("head") else context.full_engine
    return any(found == architecture for found, *_ in _tiny_models(context, task.default_head, engine, spec, []))


def _check_head(context: _Context, name: str, record) -> None:
    import torch

    state: dict = {}

    def builds():
        subject = _head_subject(context, name)
        model = subject["model"]
        assert isinstance(model, torch.nn.Module), f"build returned {type(model).__name__}, not a torch.nn.Module"
        state.update(subject)
        return f"for task '{subject['task_name']}' on the tiny {subject['architecture']}"

    if not record("builds from the tiny model", builds):
        return
    head, model, tokenizer, batch = state["head"], state["model"], state["tokenizer"], state["batch"]

    def trains():
        torch.manual_seed(0)
        model.train()
        before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss = head.loss(model(**batch), batch)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "loss must be a scalar tensor"
        assert torch.isfinite(loss), f"loss is {float(loss)}"
        loss.backward()
        optimizer.step()
        after = [p for p in model.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), "one SGD step changed no parameter"
        return f"loss {float(loss.detach()):.4f}"

    if not record("trains one step", trains):
        return

    def saves():
        directory = context.directory(f"head-{name}")
        model.eval()
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        loaded = head.load(directory).eval()
        # An encoder-decoder's decoder reads the labels (shifted right); other models do without them.
        keep_labels = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
        inputs = {k: v for k, v in batch.items() if k != "labels" or keep_labels}
        with torch.inference_mode():
            first, second = model(**inputs), loaded(**inputs)
        a, b = _first_tensor(first), _first_tensor(second)
        assert a is not None and b is not None, "the model outputs hold no tensor to compare"
        assert a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5), "the reloaded model's outputs differ"

    record("saves and reloads with equal outputs", saves)


def _first_tensor(outputs):
    import torch

    if isinstance(outputs, torch.Tensor):
        return outputs
    for key in ("logits", "start_logits"):
        value = getattr(outputs, key, None)
        if isinstance(value, torch.Tensor):
            return value
    values = outputs.values() if isinstance(outputs, dict) else outputs if isinstance(outputs, (tuple, list)) else ()
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def _check_optimizer(context: _Context, name: str, record) -> None:
    def steps():
        import torch

        from ..config import OptimizerConfig

        component = context.engine.component("optimizer", name)
        given = context._options.get(f"optimizer:{name}", {})
        options = context.engine.parse_options(component, given, key="optimizer")
        config = OptimizerConfig(name=name, lr=1e-2, options=options if options is not None else {})
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 2)
        groups = [
            {"params": [layer.weight], "weight_decay": config.weight_decay},
            {"params": [layer.bias], "weight_decay": 0.0},
        ]
        optimizer = component.factory(groups, config)
        assert isinstance(optimizer, torch.optim.Optimizer), f"factory returned {type(optimizer).__name__}, not a torch.optim.Optimizer"
        before = layer.weight.detach().clone()
        loss = layer(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert not torch.equal(before, layer.weight), "step() left the parameters unchanged"
        state = optimizer.state_dict()
        assert "state" in state and "param_groups" in state, "state_dict() lacks state or param_groups"

    record("steps a parameter group", steps)


def _check_explainer(context: _Context, name: str, record) -> None:
    def explains():
        import torch

        from ..config import load_config
        from ..predictor import Predictor, read_prediction_inputs

        task_name = context.explainer_tasks.get(name, "text_classification")
        engine = next((e for e in (context.engine, context.full_engine) if task_name in e.names("task")), None)
        if engine is None:
            if name in context.explainer_tasks:
                raise AssertionError(f"explainer_tasks names task '{task_name}', which is not installed")
            raise _Skip("needs the first-party text_classification task (or name the task: explainer_tasks=)")
        task, _, paths = context.task_with_data(task_name, engine)
        head_engine = next(e for e in (engine, context.engine, context.full_engine) if task.default_head in e.names("head"))
        head = context.create("head", task.default_head, head_engine)
        model = head.build(context.model, task.head_spec()).eval()
        config = load_config({"model": context.model, "task": {"name": task_name, "train": str(paths["train"])}})
        predictor = Predictor(context.tmp, config, task, head, model, context.tokenizer, torch.device("cpu"), engine=engine)
        explainer = context.create("explainer", name)
        if task_name == "text_classification" and name not in context.explainer_tasks:
            inputs: list = ["the film was great", "a boring show"]
        else:  # the first rows of the task's own example data, as `lccore explain --input` would read them
            inputs = [value for _, value in itertools.islice(read_prediction_inputs(str(paths["train"])), 2)]
        records = explainer.explain(predictor, inputs)
        assert isinstance(records, list) and records, "explain returned no records"
        covered = set()
        for item in records:
            item = item.to_dict() if hasattr(item, "to_dict") else item
            # a word lies in the record's "text", or in the input field its "field" names (the
            # second text of a pair: "text_pair")
            fields = list(dict.fromkeys(w.get("field", "text") for w in item["words"])) or ["text"]
            for field in fields:
                assert isinstance(item.get(field), str), f"words name the field '{field}', which the record does not hold as a string"
                got = [w["text"] for w in item["words"] if w.get("field", "text") == field]
                assert got == item[field].split(), f"words {got} are not the words of {field} {item[field]!r}"
            scores = [w["score"] for w in item["words"]]
            assert all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores), f"non-numeric or infinite word score in {scores}"
            json.dumps(item)
            covered.add(item["text_index"] if isinstance(item.get("text_index"), int) else _input_index(inputs, item["text"]))
        missing = [inputs[i] for i in range(len(inputs)) if i not in covered]
        assert not missing, f"no record explains {missing}"
        return f"{len(records)} records (task {task_name})"

    record("one attribution per word", explains)


def _input_index(inputs: list, text: str) -> int | None:
    """The input a record's text came from (a string, or a JSON object holding it)."""
    for index, value in enumerate(inputs):
        if value == text or (isinstance(value, dict) and text in value.values()):
            return index
    return None


def _check_ethics_policy(context: _Context, name: str, record) -> None:
    def decides():
        policy = context.create("ethics_policy", name)
        texts = ["the film was great", "Alice lives in Paris, alice@example.com, +44 20 7946 0958", ""]
        for stage in ETHICS_STAGES:
            for text in texts:
                decision = policy.inspect(text, stage)
                decision = decision.to_dict() if hasattr(decision, "to_dict") else decision
                assert isinstance(decision, dict), f"inspect returned {type(decision).__name__}, not a dict"
                value = decision.get("decision")
                assert value in ETHICS_DECISIONS, f"decision {value!r} for {text!r} at {stage} is not one of {ETHICS_DECISIONS}"
                if value == "redact":
                    assert isinstance(decision.get("redacted"), str), "a redact decision must carry the 'redacted' text"
                reasons = decision.get("reasons", [])
                assert isinstance(reasons, (list, tuple)), "'reasons' must be a list"
                json.dumps(decision, default=str)

    record("valid decisions at every stage", decides)


def _check_kg_backend(context: _Context, name: str, record) -> None:
    def round_trip():
        from rdflib import Literal, URIRef
        from rdflib.namespace import RDF, RDFS

        store = context.create("kg_backend", name)
        try:
            alice = URIRef("http://example.org/lccore-check/Alice")
            person = URIRef("http://example.org/lccore-check/Person")
            triples = [(alice, RDFS.label, Literal("Alice")), (alice, RDF.type, person)]
            added = store.add(triples, provenance={"source": "lccore.testing"})
            assert added == 2, f"add of 2 new triples returned {added}"
            again = store.add(triples, provenance={"source": "lccore.testing"})
            assert again == 0, f"adding the same triples again returned {again}, expected 0"
            result = store.query(f"SELECT ?label WHERE {{ <{alice}> <{RDFS.label}> ?label }}")
            assert result.get("type") == "select", f"SELECT gave type {result.get('type')!r}"
            assert [str(row["label"]) for row in result["rows"]] == ["Alice"], f"SELECT rows {result['rows']}"
            ask = store.query(f"ASK {{ <{alice}> a <{person}> }}")
            assert ask == {"type": "ask", "value": True} or ask.get("value") is True, f"ASK gave {ask}"
            found = store.lookup("alice")
            assert [f["iri"] for f in found] == [str(alice)], f"lookup('alice') gave {found}"
            try:
                store.query("SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }")
            except ConfigError:
                pass
            else:
                raise AssertionError("a SERVICE query ran without allow_network=True")
        finally:
            store.close()

    record("add/query/lookup", round_trip)


def _check_reasoner(context: _Context, name: str, record) -> None:
    def has_answer():
        reasoner = context.create("reasoner", name)
        assert callable(getattr(reasoner, "answer", None)), "a reasoner needs answer(query, *, predictor, graph=None)"
        return "answer() present; its behaviour needs a trained model and is not run"

    record("has answer()", has_answer)


CHECKS: dict[str, Callable] = {
    "task": _check_task,
    "head": _check_head,
    "optimizer": _check_optimizer,
    "reasoner": _check_reasoner,
    "kg_backend": _check_kg_backend,
    "explainer": _check_explainer,
    "ethics_policy": _check_ethics_policy,
}
