"""The contracts of the component kinds the training loop drives: tasks and heads.

Plugins subclass these (or follow the same duck type). The other kinds' contracts are described
in :mod:`lccore.hookspecs`. Nothing here imports torch at module import time.
"""

from __future__ import annotations

from typing import Any, Sequence


class Task:
    """A task: reads its data, encodes examples for a model, decodes and scores predictions.

    Examples are whatever the task likes (typically small attrs records) but each carries
    ``where`` ("file:line") so that errors found later can still point at their source.
    """

    #: The head used when the config names none.
    default_head: str = ""
    #: The main metric: early stopping and the best checkpoint use it unless configured otherwise.
    metric: str = ""
    #: Every metric :meth:`metrics` reports.
    metric_names: tuple[str, ...] = ()
    greater_is_better: bool = True
    #: Metrics for which lower is better although :attr:`greater_is_better` holds (a regression's
    #: mse beside its main pearson): early stopping on one of them looks for a fall.
    lower_is_better: tuple[str, ...] = ()
    #: False when the task's targets are not one class out of several (a number, independent
    #: labels): a run that asks for label smoothing is then refused, whatever the head.
    supports_label_smoothing: bool = True

    def default_head_for(self, origin: dict) -> str | None:
        """Optional: the head to use when the config names none and the starting model was made
        by an earlier lccore run; ``origin`` is that run's manifest (``components.task.name``,
        ``model``, ...). None keeps :attr:`default_head`. A classifier over an encoder that masked-LM
        pretraining made picks a head that does not read its untrained [CLS]."""
        return None

    def read(self, path) -> list:
        """Parse a data file into examples; raise :class:`lccore.DataError` naming file and line.

        A list or any iterable: a generator keeps a file of any size out of memory (the training
        split is read in passes, never held whole)."""
        raise NotImplementedError

    def fit(self, examples: Sequence) -> None:
        """Learn what the training data defines (e.g. the label set). ``examples`` reads the
        training files again on each pass (iterate it; ``len`` and indexing work, by reading).
        A later run on the same files calls ``restore(head_spec())`` instead."""

    def head_spec(self) -> dict:
        """JSON-serialisable description of the output layer (e.g. ``{"labels": [...]}``).

        Saved in the run directory and handed back to :meth:`restore` when the run is loaded."""
        return {}

    def restore(self, spec: dict) -> None:
        """Take back the state :meth:`head_spec` described, for inference on a saved run."""

    def tokenizer_record(self, tokenizer) -> dict:
        """What of the tokenizer the task's features depend on beyond its files' hash (a chat
        template and its end-of-turn token), JSON-serialisable. Recorded in the run's manifest
        when training starts and computed again by :func:`lccore.load`: a run whose tokenizer
        now gives another record is refused with the difference. Default: nothing to record."""
        return {}

    def describe_features(self, features: list[dict], tokenizer) -> str | None:
        """Lines printed when training starts, about the first few training features (the
        dialogue task: the share of supervised tokens and one conversation decoded with its
        masked parts marked), so a wrong encoding shows before hours are spent. Default: None."""
        return None

    def encode(self, examples: Sequence, tokenizer, max_length: int) -> list[dict]:
        """One feature dict per example (``input_ids``, ``attention_mask``, ``labels`` if known).

        Features may carry other keys (word alignment, offsets, the text) for :meth:`decode`; only
        the tokenizer's model inputs and ``labels`` reach the model. The kernel calls this on
        chunks of examples (:data:`lccore.data.features.CHUNK_EXAMPLES`) and caches the features
        as Arrow and JSON: keep them to numbers, strings, None, lists and string-keyed dicts, and
        let a feature refer only to examples of its own chunk."""
        raise NotImplementedError

    def collate(self, features: list[dict], tokenizer) -> dict:
        """Pad a list of features into a batch of tensors (dynamic padding to the longest)."""
        import torch

        # Only the tokenizer's own inputs go to the model; other keys are the task's bookkeeping.
        inputs = [{k: f[k] for k in tokenizer.model_input_names if k in f} for f in features]
        batch = dict(tokenizer.pad(inputs, padding=True, return_tensors="pt"))
        if all("labels" in f for f in features):
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch

    def forward(self, model, batch: dict):
        """Run the model on a batch at evaluation and prediction time; ``decode`` gets the result.

        The default is ``model(**batch)``. A generation task overrides it to also call
        ``model.generate`` (training always runs ``model(**batch)`` and the head's loss)."""
        return model(**batch)

    def decode(self, outputs: Any, batch: dict, features: list[dict]) -> list[dict]:
        """Prediction records (JSON-serialisable dicts) for one batch of model outputs;
        ``features`` are the batch's feature dicts, in batch order."""
        raise NotImplementedError

    def gather(self, records: list[dict], features: list[dict]) -> list[dict]:
        """One prediction record per example from the per-feature records :meth:`decode` gave,
        called once per chunk that :meth:`encode` was given.

        The default is one feature per example. A task whose :meth:`encode` cuts a long example
        into several windows (extractive QA) combines their records here."""
        return records

    def metrics(self, predictions: list[dict], examples: Sequence) -> dict[str, float]:
        """Score prediction records against the examples' gold answers: a dict of floats, and
        optionally nested dicts of floats (e.g. per-type scores)."""
        raise NotImplementedError

    def metrics_accumulator(self) -> "MetricsAccumulator":
        """What scores a large evaluation a chunk at a time: ``update(predictions, examples)`` for
        each chunk, then ``compute()`` gives what :meth:`metrics` gives on all of them at once.

        The default keeps every prediction and example and calls :meth:`metrics` at the end. A
        task whose metrics are sums (counts of matches, totals of log-likelihood) returns an
        accumulator that keeps only those, so that ``lccore evaluate`` on a file of any size runs
        in bounded memory; :func:`lccore.testing.check_plugin` checks the two agree."""
        return MetricsAccumulator(self)

    def parse_input(self, value: Any, where: str):
        """One example from a prediction input (a string or a JSON object)."""
        raise NotImplementedError

    def example_data(self, directory) -> dict | None:
        """Write a few labelled examples into ``directory`` (a folder that exists) and return
        ``{split: path}`` (at least ``"train"``), in the format :meth:`read` accepts; ``None``
        (the default) when the task has none. :func:`lccore.testing.check_plugin` round-trips
        them through the task's contract; ``lccore new-plugin`` scaffolds one."""
        return None

    def texts_of(self, example) -> dict[str, str] | None:
        """The example's free texts by field, for ethics policies (``{"text": ...}``); None when
        the task exposes none. The default handles examples with a string ``text`` attribute."""
        text = getattr(example, "text", None)
        return {"text": text} if isinstance(text, str) else None

    def with_texts(self, example, texts: dict[str, str]):
        """A copy of ``example`` with the fields in ``texts`` replaced (redacted by a policy).

        Not implemented by default: a task whose examples hold offsets into their text (NER,
        relation extraction) cannot simply swap it. A training example that a policy wants
        redacted is then dropped instead, and the run reports it."""
        raise NotImplementedError


class MetricsAccumulator:
    """Scores an evaluation chunk by chunk (see :meth:`Task.metrics_accumulator`). This one, the
    default, keeps everything and calls ``task.metrics`` once at the end; subclasses keep less."""

    def __init__(self, task: Task):
        self.task = task
        self.predictions: list[dict] = []
        self.examples: list = []

    def update(self, predictions: list[dict], examples: Sequence) -> None:
        self.predictions.extend(predictions)
        self.examples.extend(examples)

    def compute(self) -> dict:
        return self.task.metrics(self.predictions, self.examples)

    @staticmethod
    def once(task: Task, predictions: list[dict], examples: Sequence) -> dict:
        """``task``'s accumulator over one chunk holding everything: a task that has an
        accumulator writes its :meth:`Task.metrics` as this, so the two can never disagree."""
        accumulator = task.metrics_accumulator()
        accumulator.update(predictions, examples)
        return accumulator.compute()


class Head:
    """An output layer and loss on top of a pretrained backbone.

    The model :meth:`build` and :meth:`load` return is a ``torch.nn.Module`` with ``forward(**batch)``
    (an output with ``logits``, and ``loss`` given ``labels``), ``save_pretrained(directory)`` (the run
    writes ``model/`` with it), ``config`` (the backbone's: dropout settings), and a
    ``transformers.PreTrainedModel`` among its modules (layer freezing, layer-wise learning rates and
    LoRA find its layers there). A Hugging Face ``*ForXxx`` class has all of it; a model of one's own
    subclasses :class:`lccore.heads.BackboneWithHead`, which saves and loads it with safetensors."""

    #: Set by the training loop from ``train.label_smoothing``.
    label_smoothing: float = 0.0
    #: False for a head whose loss is not a cross-entropy over classes: a run that asks for label
    #: smoothing is then refused.
    supports_label_smoothing: bool = True

    def build(self, model: str, spec: dict):
        """A new model from a pretrained backbone (path or hub id) and the task's ``head_spec()``."""
        raise NotImplementedError

    def load(self, model_dir):
        """A model saved by a run (``RUN_DIR/model``)."""
        raise NotImplementedError

    def loss(self, outputs, batch):
        """The scalar training loss; by default the loss the model computed from ``labels``, or
        with label smoothing a smoothed cross-entropy of ``outputs.logits`` against them (label
        -100 is ignored, as transformers' own losses do)."""
        logits = getattr(outputs, "logits", None)
        if self.label_smoothing > 0 and self.supports_label_smoothing and "labels" in batch and logits is not None:
            import torch

            return torch.nn.functional.cross_entropy(
                logits.view(-1, logits.shape[-1]).float(), batch["labels"].view(-1), ignore_index=-100, label_smoothing=self.label_smoothing
            )
        return outputs.loss


class KGBackend:
    """A knowledge-graph store. Terms are rdflib terms (``URIRef``, ``Literal``, ``BNode``) and a
    triple is a ``(subject, predicate, object)`` tuple of them, whatever the store underneath."""

    def add(self, triples, provenance=None) -> int:
        """Add ``triples`` in one transaction (all or none) and return how many were new; adding a
        triple twice keeps one. ``provenance`` (one dict for all, or one per triple, or None) is
        recorded by RDF reification: one ``rdf:Statement`` per triple and source, with an IRI
        derived from both, so that re-adding the same extraction adds nothing."""
        raise NotImplementedError

    def query(self, sparql: str, *, allow_network: bool = False, timeout: float | None = None, max_rows: int | None = None) -> dict:
        """Run a SPARQL 1.1 query: ``{"type": "select", "vars": [...], "rows": [{var: term}]}``,
        ``{"type": "ask", "value": bool}`` or ``{"type": "graph", "triples": [...]}``. Queries
        that reach the network (``SERVICE``, ``LOAD``, remote ``FROM``) raise
        :class:`lccore.ConfigError` unless ``allow_network``.

        ``max_rows`` (None: all) bounds the memory of a result: at most that many rows (or
        triples) are read, and a result cut short says so with ``"truncated": True``.

        ``timeout`` (seconds, a positive finite number; None: no limit) bounds the call: past it
        the query is really stopped, not left running (it runs where it can be killed), and
        :class:`lccore.TimeLimitError` is raised; the store stays usable. A refused or malformed
        query is refused at once, before any time is spent. A bad ``timeout`` is a ConfigError."""
        raise NotImplementedError

    def update(self, sparql: str, *, allow_network: bool = False) -> None:
        """Run a SPARQL 1.1 update (same network rule as :meth:`query`)."""
        raise NotImplementedError

    def lookup(self, label: str, *, limit: int = 10) -> list[dict]:
        """Entities whose ``rdfs:label`` equals ``label`` ignoring case: ``{"iri", "label", "types"}``."""
        raise NotImplementedError

    def neighbours(self, iri: str, *, hops: int = 1, limit: int = 1000) -> list[tuple]:
        """The triples within ``hops`` of ``iri``, in either direction (provenance statements excluded)."""
        raise NotImplementedError

    def load(self, path, format: str | None = None) -> int:
        """Import an RDF file (format from the extension: .ttl, .nt, .jsonld, .rdf/.xml); returns
        the number of triples read. Never fetches remote documents; a malformed file raises
        :class:`lccore.DataError` naming the file, line and reason."""
        raise NotImplementedError

    def dump(self, path, format: str | None = None) -> None:
        """Export every triple (format from the extension)."""
        raise NotImplementedError

    def results_json(self, result: dict):
        """A :meth:`query` result as JSON data: SPARQL 1.1 Query Results JSON for ``select`` and
        ``ask``, expanded JSON-LD (a list of node objects) for ``graph``. What ``lccore serve``
        answers at ``/v1/kg/query``; a store may override it with its own serialiser."""
        if result["type"] != "graph":
            return sparql_results_json(result)
        import json

        from rdflib import Graph

        graph = Graph()
        for triple in result["triples"]:
            graph.add(triple)
        return json.loads(graph.serialize(format="json-ld"))

    def __len__(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release the store."""


def sparql_results_json(result: dict) -> dict:
    """SPARQL 1.1 Query Results JSON for a ``select`` or ``ask`` result of :meth:`KGBackend.query`."""
    if result["type"] == "ask":
        return {"head": {}, "boolean": result["value"]}
    bindings = [{name: _sparql_term(term) for name, term in row.items()} for row in result["rows"]]
    return {"head": {"vars": result["vars"]}, "results": {"bindings": bindings}}


def _sparql_term(term) -> dict:
    """One rdflib term as a SPARQL 1.1 JSON results binding."""
    from rdflib import BNode, URIRef

    if isinstance(term, URIRef):
        return {"type": "uri", "value": str(term)}
    if isinstance(term, BNode):
        return {"type": "bnode", "value": str(term)}
    out = {"type": "literal", "value": str(term)}
    if term.language:
        out["xml:lang"] = term.language
    elif term.datatype is not None:
        out["datatype"] = str(term.datatype)
    return out
