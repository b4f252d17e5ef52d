"""Every hook lccore defines, in one place.

A plugin is a module (or any object) found through the ``lccore`` entry-point group, or handed to
:class:`lccore.Engine` directly. It implements some of the hooks below, marked with
``@lccore.hookimpl``. There are two families:

**Registration hooks** — one per component kind. The engine calls each plugin's implementation with
a ``register`` callback bound to that kind and that plugin, so it always knows which plugin gave
which name::

    @lccore.hookimpl
    def register_tasks(register):
        register("text_classification", make_task, options=TextClassificationOptions,
                 description="Single-label classification of a text.")

``register(name, factory, *, options=None, description="")`` records a component. ``factory`` is
called only when a run asks for that name, so a plugin module should import nothing heavy (no
torch, no transformers) at import time: import inside the factory. ``options`` is an optional
attrs class: the config keys of that component's section (beyond the kernel's own) are validated
against it and the instance is passed to the factory. A name registered by two plugins is an
error naming both, raised when the name is used (disable one of the plugins to resolve it).

**Lifecycle hooks** — notifications during training. Every plugin's implementation is called,
in pluggy's order: those marked ``@lccore.hookimpl(tryfirst=True)`` first, ``trylast=True``
last, the others the most recently registered first (plugins register in the order of their
entry-point names, then those given to ``Engine(plugins=[...])``); return values are ignored. An observer that raises is reported as a warning
naming its plugin and the run continues: an observer can watch a run but cannot break it. In a
multi-process (data-parallel) run they are called in the main process only, so an observer sees
one run, not one per process.

A hook implementation whose name matches no spec below (a typo) makes its plugin fail to load,
with the reason shown by ``lccore plugins``.
"""

from __future__ import annotations

import pluggy

PROJECT = "lccore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The component kinds, each with its registration hook.
COMPONENT_KINDS: dict[str, str] = {
    "task": "register_tasks",
    "head": "register_heads",
    "optimizer": "register_optimizers",
    "reasoner": "register_reasoners",
    "kg_backend": "register_kg_backends",
    "explainer": "register_explainers",
    "ethics_policy": "register_ethics_policies",
}

#: Hooks that extend the command line and the HTTP server (not components: nothing is registered by name).
EXTENSION_HOOKS = ("register_commands", "register_routes")

#: The lifecycle events, in the order a run emits them.
LIFECYCLE_EVENTS = ("on_train_start", "on_train_step", "on_evaluate", "on_checkpoint", "on_train_end")


# --- Registration hooks -------------------------------------------------------------------------


@hookspec
def register_tasks(register):
    """Register tasks: what data looks like, how it becomes model input, how it is scored.

    Called once when an engine starts. ``factory(options)`` (or ``factory()`` when no options
    class was registered) must return an object following :class:`lccore.components.Task`:
    ``read(path)`` parses a data file into examples (raising :class:`lccore.DataError` with file
    and line), ``fit(train_examples)`` learns the label space, ``head_spec()`` describes the output
    layer the head must build, ``encode(...)`` turns examples into features, ``decode(...)`` turns
    model outputs into prediction records, ``metrics(...)`` scores them, ``parse_input(...)`` reads
    one prediction input, and ``default_head``/``metric`` name the usual head and main metric.
    """


@hookspec
def register_heads(register):
    """Register heads: the output layer and loss put on top of a pretrained backbone.

    ``factory(options)`` returns an object following :class:`lccore.components.Head`:
    ``build(model, spec)`` returns a ``torch.nn.Module`` (normally a Hugging Face
    ``PreTrainedModel`` so that the run's ``model/`` folder loads with plain transformers) from a
    model path or hub id and the task's ``head_spec()``; ``load(model_dir)`` loads a saved one;
    ``loss(outputs, batch)`` returns the scalar training loss.
    """


@hookspec
def register_optimizers(register):
    """Register optimisers.

    ``factory(param_groups, config)`` returns a ``torch.optim.Optimizer``. ``param_groups`` are
    built by the kernel (weight decay on weights, none on biases and norms); ``config`` is the
    run's :class:`lccore.config.OptimizerConfig` with the plugin's own options in ``config.options``.
    The learning-rate schedule (warmup, then linear, cosine or constant) is the kernel's.
    """


@hookspec
def register_reasoners(register):
    """Register reasoners: components that answer a query with a trained model and, optionally, a
    knowledge graph (e.g. ``generate``, ``kg_qa``).

    ``factory(options)`` returns an object with ``answer(query, *, predictor, graph=None) -> dict``:
    the answer record, including the evidence it used.
    """


@hookspec
def register_kg_backends(register):
    """Register knowledge-graph stores.

    ``factory(options)`` returns an object following :class:`lccore.components.KGBackend`: it
    adds triples with provenance (``add``), runs SPARQL (``query``), looks up entities by label
    (``lookup``), returns an entity's neighbourhood (``neighbours``), and imports and exports RDF
    (``load``, ``dump``). Terms are rdflib terms (``URIRef``, ``Literal``, ``BNode``) whatever the
    store underneath.
    """


@hookspec
def register_explainers(register):
    """Register explainers: attributions of a prediction to its input.

    ``factory(options)`` returns an object with ``explain(predictor, texts) -> list[dict]``, one
    record per text and explained target (a class; for NER each predicted entity) holding the
    prediction, the words with their character offsets, and one attribution per word (the
    first-party ``explain`` plugin documents the record format). ``explain`` may take a keyword
    ``progress`` (bool): ``lccore explain`` then passes True unless ``--quiet``, and the explainer
    draws a bar with :func:`lccore.progress_bar`.
    """


@hookspec
def register_ethics_policies(register):
    """Register ethics policies that inspect text at a stage (``training_data``, ``input``,
    ``output``).

    ``factory(options)`` returns an object with ``inspect(text, stage) -> dict``: a decision
    (``allow``, ``flag``, ``redact`` with the redacted text, or ``block``), the reasons and the
    spans involved. A redacting policy should also return ``"edits": [[start, end, replacement],
    ...]`` (sorted, not overlapping), so the spans of the policies after it map back to the
    original text in linear time; without them the kernel diffs the two texts, which is quadratic
    at worst. An options field with ``metadata={"path": True}`` (a model's run directory)
    is read relative to the config file that sets it. :class:`lccore.ethics.Guard` applies the
    policies to predictions and reasoners.
    """


# --- The command line ---------------------------------------------------------------------------


@hookspec
def register_commands(commands):
    """Add subcommands to the ``lccore`` command line (``lccore kg import`` comes from the ``kg``
    plugin this way).

    ``commands.add(name, help="…", group=None)`` returns a new ``argparse.ArgumentParser`` for
    ``lccore NAME`` or, with ``group``, ``lccore GROUP NAME`` (``commands.group(name, help="…")``
    describes a group; it is made on first use). Add the arguments and
    ``parser.set_defaults(command=run)``, where ``run(args)`` returns the exit status and raises
    :class:`lccore.ConfigError` / :class:`lccore.DataError` for a one-line error. A numeric flag
    takes ``type=commands.bounded(int, 1, 1000)`` (a range-checked number; a value outside is one
    line before ``run`` starts), and an output file is checked with
    ``commands.check_output_path(path, "--output")`` before any work. A name already taken (by
    lccore or another plugin) is refused: the plugin's commands are skipped with a warning. Import
    nothing heavy here; do it inside ``run``.
    """


@hookspec
def register_routes(server):
    """Add HTTP endpoints to ``lccore serve`` (the ``serve`` plugin's app): the ``generation``
    plugin adds ``/v1/generate``, ``/v1/chat/completions`` and ``/v1/completions`` this way, the
    ``explain`` plugin ``/v1/explain``, the ``kg`` plugin ``/v1/kg/query``.

    Called once per app, with ``server``, the plugin's own view of it:

    - ``server.router``: a FastAPI ``APIRouter``; add routes with ``@server.router.post(...)``.
      Define request models (pydantic) inside the hook: FastAPI and pydantic are there only when
      a server is built. Don't use ``from __future__ import annotations`` in that module: FastAPI
      reads the annotations.
    - ``server.predictors``: ``{name: lccore.Predictor}``, the runs served, each behind its ethics
      guard (``predictor.guard``); ``server.kg``: the knowledge-graph store of ``--kg`` (read-only),
      or None; ``server.limits``: the limits (``timeout_s``, ``max_inputs``, ``max_new_tokens`` …).
    - ``server.pick(name)``: the run a request names (404/422 otherwise); ``server.deadline()``: the
      deadline of a request starting now; ``server.check_size(value, field)``: 413 past
      ``--max-input-chars``; ``server.parse(name, inputs)``: inputs read by the run's task;
      ``server.blocked(name, examples)``: why the run's input policies refuse one, or None (it
      runs the policies: call it in a helper thread).
    - ``await server.predict(name, examples, until)``: guarded records, batched with the other
      requests; ``await server.in_model_thread(name, fn, *args, until=...)``: any work on the
      model, never two at once; ``await server.in_helper_thread(fn, until)``: other slow work;
      ``await server.timed(awaitable, until)``: its result, or 504 at ``until``;
      ``server.on_shutdown(callback)``: called when the server stops (a plugin's own threads).
    - Raise FastAPI's ``HTTPException(status, "field: message")``: every error goes out as that
      one line and the field it names, in a body both lccore's and OpenAI's clients read.

    The routes sit behind the server's guards (Host, API key, body size). A path and method the
    server already answers is refused: that plugin's routes are left out, with a warning.
    """


# --- Lifecycle hooks ----------------------------------------------------------------------------


@hookspec
def on_train_start(run):
    """Called once, after the model, data and optimiser are ready and before the first step.

    ``run`` is the live :class:`lccore.training.RunState`: ``config``, ``output_dir``, ``model``,
    ``tokenizer``, ``task``, ``accelerator``, ``epoch``, ``step`` and ``metrics`` (the growing
    ``metrics.json``).
    """


@hookspec
def on_train_step(run, step, logs):
    """Called after every optimiser step with the global ``step`` (1-based) and ``logs``, a dict
    holding at least ``loss`` (mean over the accumulated micro-batches), ``lr`` and ``epoch``."""


@hookspec
def on_evaluate(run, split, metrics):
    """Called after each evaluation: ``split`` is ``"dev"``, ``"test.before"`` or ``"test.after"``,
    ``metrics`` the task's metrics (plus ``loss`` where labels allow it)."""


@hookspec
def on_checkpoint(run, path):
    """Called after the best model so far has been written completely to ``path`` (the run's
    ``model/`` directory). Resumable checkpoints under ``checkpoints/`` are not announced."""


@hookspec
def on_train_end(run, metrics):
    """Called once when training ends (normally or by early stopping), after the final test
    evaluation, with the complete ``metrics.json`` content."""
