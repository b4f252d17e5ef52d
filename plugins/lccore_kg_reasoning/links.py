"""Link prediction: knowledge-graph embeddings (PyKEEN) trained on a store's entity-relation-entity
triples, ranked candidates for a missing head or tail, and accepted predictions written back as
*inferred links*, never as facts.

Training wraps :func:`pykeen.pipeline.pipeline`, so a model trained here is the model PyKEEN
would train from the same triples, settings and seed. What trains: every triple whose subject
and object are IRIs, left out are literals, blank nodes, provenance statements and the RDF,
RDFS, OWL and lccore vocabularies (``rdf:type``, ``rdfs:label``, ``rdfs:subClassOf``, ``lc:*``).
Inferred links are not asserted in the graph (see :func:`accept_links`), so they never train the
next model either.

An embeddings directory holds ``model.safetensors`` (the state dict: tensors only, nothing to
unpickle), ``entities.json`` and ``relations.json`` (IRI -> row) and ``embedding.json`` (what
trained it).
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

import attrs

import lccore

MODELS = ("TransE", "RotatE", "ComplEx")
#: PyKEEN's training loops. ``lcwa`` (local closed world): each (head, relation) seen in training
#: is scored against every entity, its known tails the positives, with cross-entropy loss.
#: ``slcwa`` (stochastic LCWA): each true triple against ``negatives`` corrupted ones, with the
#: model's own default loss (TransE: margin ranking; RotatE: self-adversarial NSSA; ComplEx: softplus).
#: ``auto``: lcwa with reciprocal relations while an epoch scores at most :data:`LCWA_MAX_SCORES`
#: (head, relation) x entity pairs, else slcwa (see :func:`resolve_options`).
TRAINING_LOOPS = ("auto", "lcwa", "slcwa")
#: ``auto`` picks lcwa up to this many scores per epoch ((head, relation) pairs, reciprocal ones
#: included, times entities). LCWA RotatE runs at about 0.35-0.55 M scores/s on two CPU cores
#: (20,000 links over 1,000 entities: 24 M scores, 70 s an epoch), so this is 5-7 s an epoch, what
#: a sLCWA epoch of the --max-triples default costs. UMLS: 0.21 M; Nations: 0.01 M.
LCWA_MAX_SCORES = 2_500_000
#: LCWA holds a batch's scores against every entity at once, each through a dim-sized vector:
#: batch x entities x dim above this is refused (about 1 GB per intermediate tensor for RotatE).
LCWA_MAX_BATCH_ELEMENTS = 1 << 27
#: The loss each loop trains with (None: the model's default).
LOSSES = {"lcwa": "crossentropy", "slcwa": None}
#: Corrupted triples per true one when ``training="slcwa"`` and none are given.
DEFAULT_NEGATIVES = 16
#: Bounds of the options that cost time or memory.
MAX_EPOCHS = 10_000
MIN_DIM, MAX_DIM = 2, 1024
MAX_BATCH_SIZE = 1 << 16
MAX_NEGATIVES = 256
#: ``max_triples``: the default, and the most it may be raised to. With the default settings
#: 100,000 links take about 3 s per TransE epoch (7 s RotatE) with slcwa, what ``auto`` picks for
#: them, on two CPU cores: 12 minutes for 100 RotatE epochs (5 for TransE).
DEFAULT_MAX_TRIPLES = 100_000
MAX_TRIPLES_LIMIT = 10_000_000
MAX_TOP = 1_000
#: Triples the training fit is measured on (filtered MRR on training triples: a sanity check).
FIT_SAMPLE = 500

FILES = ("embedding.json", "entities.json", "relations.json", "model.safetensors")
#: Namespaces whose predicates are schema, labels or provenance, not links between entities.
_NOT_LINKS = (
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "http://www.w3.org/2000/01/rdf-schema#",
    "http://www.w3.org/2002/07/owl#",
)


@attrs.frozen
class TrainingOptions:
    model: str = "RotatE"
    epochs: int = 100
    dim: int = 64
    seed: int = 0
    learning_rate: float = 0.01
    batch_size: int = 256
    #: The training loop, one of :data:`TRAINING_LOOPS`.
    training: str = "auto"
    #: Train on reciprocal relations too (PyKEEN's ``create_inverse_triples``): each (h, r, t) also
    #: as (t, r⁻¹, h), so a missing head is predicted as the tail of r⁻¹. LCWA without it learns
    #: tails only. None: with lcwa, not with slcwa (the measured better of each).
    reciprocal: bool | None = None
    #: sLCWA only: corrupted triples scored against each true one (PyKEEN's basic sampler; None:
    #: :data:`DEFAULT_NEGATIVES`). More is slower per epoch and, up to a point, better (UMLS,
    #: RotatE, 100 epochs: MRR 0.68 with 1, 0.76 with 32). LCWA scores every entity: none to give.
    negatives: int | None = None

    @property
    def negatives_used(self) -> int | None:
        if self.training != "slcwa":
            return None
        return DEFAULT_NEGATIVES if self.negatives is None else self.negatives

    def check(self, flags: bool = False) -> None:
        def refuse(name: str, expected: str, value):
            key = f"--{name.replace('_', '-')}" if flags else name
            raise lccore.ConfigError(f"kg embed: {key}: expected {expected}, got {value!r}")

        if self.model not in MODELS:
            refuse("model", " or ".join(MODELS), self.model)
        if self.training not in TRAINING_LOOPS:
            refuse("training", " or ".join(TRAINING_LOOPS), self.training)
        if self.reciprocal is not None and not isinstance(self.reciprocal, bool):
            refuse("reciprocal", "true, false or None", self.reciprocal)
        if self.negatives is not None and self.training != "slcwa":
            key = "--negatives" if flags else "negatives"
            why = "lcwa scores every entity, it samples no negatives" if self.training == "lcwa" else "auto may choose lcwa, which samples none"
            raise lccore.ConfigError(f"kg embed: {key}: only with --training slcwa ({why})")
        for name, low, high in (("epochs", 1, MAX_EPOCHS), ("dim", MIN_DIM, MAX_DIM), ("batch_size", 1, MAX_BATCH_SIZE), ("negatives", 1, MAX_NEGATIVES), ("seed", 0, 2**32 - 1)):
            if name == "negatives" and self.negatives is None:
                continue
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                refuse(name, f"an integer from {low} to {high:,}", value)
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 < rate <= 10):
            refuse("learning_rate", "a number above 0 and at most 10", rate)


# --- the graph's links --------------------------------------------------------------------------


def _link_filter() -> str:
    from lccore_kg import STATEMENT_PREFIX, VOCAB

    skipped = " && ".join(f'!STRSTARTS(STR(?p), "{ns}")' for ns in (*_NOT_LINKS, str(VOCAB)))
    return f'isIRI(?s) && isIRI(?o) && !STRSTARTS(STR(?s), "{STATEMENT_PREFIX}") && !STRSTARTS(STR(?o), "{STATEMENT_PREFIX}") && {skipped}'


def graph_links(store, *, max_triples: int = DEFAULT_MAX_TRIPLES, where: str = "store") -> list[tuple[str, str, str]]:
    """The store's entity-relation-entity triples as IRI strings, sorted (the same store always
    trains the same model). Counted first: more than ``max_triples`` is refused before any is
    read; none is a DataError too."""
    condition = _link_filter()
    rows = store.query(f"SELECT (COUNT(*) AS ?n) WHERE {{ ?s ?p ?o . FILTER({condition}) }}")["rows"]
    count = int(rows[0]["n"]) if rows else 0
    if count == 0:
        raise lccore.DataError(f"{where}: no links to learn from (no triple between two IRIs outside rdf:, rdfs:, owl: and lc:)")
    if count > max_triples:
        raise lccore.DataError(f"{where}: {count:,} links, more than --max-triples {max_triples:,} (embedding training on this machine; raise it up to {MAX_TRIPLES_LIMIT:,} if you have the time)")
    result = store.query(f"SELECT ?s ?p ?o WHERE {{ ?s ?p ?o . FILTER({condition}) }}")
    return sorted({(str(r["s"]), str(r["p"]), str(r["o"])) for r in result["rows"]})


# --- training -----------------------------------------------------------------------------------


@attrs.define
class Embeddings:
    """A trained model with its id maps: what :func:`train` returns and :func:`load` reads."""

    model: object  # a pykeen.models.Model
    entity_to_id: dict[str, int]
    relation_to_id: dict[str, int]
    info: dict

    @property
    def id_to_entity(self) -> list[str]:
        names = [""] * len(self.entity_to_id)
        for iri, index in self.entity_to_id.items():
            names[index] = iri
        return names

    def scores(self, *, relation: str, head: str | None = None, tail: str | None = None):
        """The model's score of every entity as the missing tail (``head`` given) or head
        (``tail`` given): a 1-d float tensor indexed by entity id."""
        import torch

        r = self.relation_to_id[relation]
        self.model.eval()
        with torch.inference_mode():
            # predict_t / predict_h: a model trained with reciprocal relations scores a missing
            # head as the tail of the inverse relation (the only direction LCWA trained it on).
            if head is not None:
                batch = torch.tensor([[self.entity_to_id[head], r]], dtype=torch.long)
                return self.model.predict_t(batch)[0].float().cpu()
            batch = torch.tensor([[r, self.entity_to_id[tail]]], dtype=torch.long)
            return self.model.predict_h(batch)[0].float().cpu()


def _epoch_callback(advance: Callable[[float], None] | None):
    """A PyKEEN training callback calling ``advance(loss)`` after each epoch (lccore's progress
    bar). It also freezes the garbage collector's heap: PyKEEN runs ``gc.collect()`` every epoch,
    which over the objects torch and its imports leave costs 30-130 ms a time, more than a small
    graph's whole epoch; frozen objects are not scanned (and are unfrozen after training)."""
    import gc

    from pykeen.training.callbacks import TrainingCallback

    class EpochDone(TrainingCallback):
        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            gc.freeze()
            if advance is not None:
                advance(epoch_loss)

    return EpochDone()


def _quiet_pykeen() -> None:
    """PyKEEN's notes on devices, seeds and memory tuning are not the user's concern: errors only."""
    import logging

    for name in ("pykeen", "torch_max_mem"):
        logging.getLogger(name).setLevel(logging.ERROR)


def triples_factory(links: Iterable[tuple[str, str, str]], *, reciprocal: bool = False):
    import numpy as np
    from pykeen.triples import TriplesFactory

    return TriplesFactory.from_labeled_triples(np.array(list(links), dtype=str).reshape(-1, 3), create_inverse_triples=reciprocal)


def lcwa_scores(links: list[tuple[str, str, str]], *, reciprocal: bool = True) -> int:
    """Scores one LCWA epoch computes: distinct (head, relation) pairs (and, with reciprocal
    relations, (tail, inverse relation) pairs), each against every entity."""
    pairs = len({(h, r) for h, r, _ in links}) + (len({(t, r) for _, r, t in links}) if reciprocal else 0)
    return pairs * len({e for h, _, t in links for e in (h, t)})


def resolve_options(options: TrainingOptions, links: list[tuple[str, str, str]], where: str = "kg embed") -> TrainingOptions:
    """``options`` with ``training="auto"`` and ``reciprocal=None`` decided for ``links``: lcwa
    with reciprocal relations when an epoch is at most :data:`LCWA_MAX_SCORES` scores (small
    graphs: Nations, UMLS, a few thousand links), else slcwa without. An lcwa batch too large for
    memory (:data:`LCWA_MAX_BATCH_ELEMENTS`) is a one-line DataError."""
    options.check()
    training = options.training
    if training == "auto":
        training = "lcwa" if lcwa_scores(links) <= LCWA_MAX_SCORES else "slcwa"
    reciprocal = (training == "lcwa") if options.reciprocal is None else options.reciprocal
    if training == "lcwa":
        entities = len({e for h, _, t in links for e in (h, t)})
        if options.batch_size * entities * options.dim > LCWA_MAX_BATCH_ELEMENTS:
            raise lccore.DataError(f"{where}: --training lcwa: a batch of {options.batch_size} x {entities:,} entities x dim {options.dim} is more than "
                                   f"{LCWA_MAX_BATCH_ELEMENTS:,} values; lower --batch-size or --dim, or use --training slcwa")
    return attrs.evolve(options, training=training, reciprocal=reciprocal)


def pipeline_settings(options: TrainingOptions) -> dict:
    """The keyword arguments of :func:`pykeen.pipeline.pipeline` that ``options`` set (model,
    loop, loss, optimiser, sampler, epochs, batch size, seed); the data, callbacks and ``use_tqdm``
    are the caller's. benchmarks/kg_links.py gives PyKEEN's pipeline the same ones."""
    settings = {
        "model": options.model,
        "model_kwargs": {"embedding_dim": options.dim},
        "training_loop": options.training,
        "optimizer": "Adam",
        "optimizer_kwargs": {"lr": options.learning_rate},
        "training_kwargs": {"num_epochs": options.epochs, "batch_size": options.batch_size},
        "random_seed": options.seed,
    }
    if LOSSES[options.training]:
        settings["loss"] = LOSSES[options.training]
    if options.training == "slcwa":
        settings["negative_sampler"] = "basic"
        settings["negative_sampler_kwargs"] = {"num_negs_per_pos": options.negatives_used}
    return settings


def train(links: list[tuple[str, str, str]], options: TrainingOptions, *, progress: Callable[[float], None] | None = None) -> Embeddings:
    """Train ``options.model`` on ``links`` through :func:`pykeen.pipeline.pipeline` (``auto``
    settings decided by :func:`resolve_options`; ``info`` records what ran and what was asked). The
    pipeline's evaluation runs on up to :data:`FIT_SAMPLE` of the training links: the filtered
    MRR it gives (``info["fit"]``) says how well the model learnt what it was shown, not how
    well it generalises."""
    requested = options
    options = resolve_options(options, links)
    import gc
    import warnings

    from pykeen.pipeline import pipeline

    _quiet_pykeen()
    training = triples_factory(links, reciprocal=options.reciprocal)
    step = max(1, training.num_triples // FIT_SAMPLE)
    fit_sample = training.clone_and_exchange_triples(training.mapped_triples[::step][:FIT_SAMPLE])
    gc.freeze()  # see _epoch_callback
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")  # PyTorch's, on a machine without a GPU
            settings = pipeline_settings(options)
            settings["training_kwargs"]["callbacks"] = [_epoch_callback(progress)]
            result = pipeline(training=training, testing=fit_sample, use_tqdm=False, **settings)
    finally:
        gc.unfreeze()
    metrics = result.metric_results
    info = {
        **attrs.asdict(options),
        "requested": {"training": requested.training, "reciprocal": requested.reciprocal},
        "negatives": options.negatives_used,
        "loss": type(result.model.loss).__name__,
        "links": training.num_triples,
        "entities": training.num_entities,
        "relations": training.real_num_relations,
        "final_loss": float(result.losses[-1]) if result.losses else None,
        "fit": {"triples": fit_sample.num_triples, "mrr": round(float(metrics.get_metric("both.realistic.inverse_harmonic_mean_rank")), 4)},
        "train_seconds": round(result.train_seconds, 2),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Embeddings(result.model.cpu(), dict(training.entity_to_id), dict(training.relation_to_id), info)


# --- files --------------------------------------------------------------------------------------


def check_out_dir(path) -> Path:
    """``path`` as a directory :func:`save` may write: new, empty, or holding an earlier
    ``kg embed`` (whose four files are replaced); anything else is refused before training."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise lccore.ConfigError(f"{path}: a file, not a directory (--out takes a directory for the embeddings)")
    if path.is_dir() and any(path.iterdir()) and not (path / "embedding.json").is_file():
        raise lccore.ConfigError(f"{path}: a non-empty directory that holds no embeddings (embedding.json); choose a new or empty one")
    if not path.exists() and not path.parent.is_dir():
        raise lccore.ConfigError(f"{path}: folder {path.parent} does not exist")
    return path


def save(embeddings: Embeddings, path) -> Path:
    """Write the four files; each goes to a new file beside it first and is moved into place
    when complete, so a failure never leaves a half-written one."""
    from safetensors.torch import save_file

    path = check_out_dir(path)
    path.mkdir(exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in embeddings.model.state_dict().items()}
    texts = {
        "embedding.json": json.dumps(embeddings.info, indent=2) + "\n",
        "entities.json": json.dumps(embeddings.entity_to_id, ensure_ascii=False) + "\n",
        "relations.json": json.dumps(embeddings.relation_to_id, ensure_ascii=False) + "\n",
    }
    written = []
    try:
        for name in FILES:
            partial = path / f".{name}.{secrets.token_hex(4)}.part"
            written.append(partial)
            if name == "model.safetensors":
                save_file(state, str(partial), metadata={"model": embeddings.info["model"]})
            else:
                partial.write_text(texts[name], encoding="utf-8")
        for partial, name in zip(written, FILES):
            os.replace(partial, path / name)
    except OSError as exc:
        raise lccore.DataError(f"{path}: cannot write the embeddings: {exc.strerror or exc}") from None
    finally:
        for partial in written:
            partial.unlink(missing_ok=True)
    return path


def _read_json(path: Path, expected: type):
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise lccore.ConfigError(f"{path}: missing (not an embeddings directory from `lccore kg embed`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise lccore.ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, expected):
        raise lccore.ConfigError(f"{path}: expected a JSON {'object' if expected is dict else expected.__name__}")
    return value


def _id_map(path: Path) -> dict[str, int]:
    mapping = _read_json(path, dict)
    if sorted(v for v in mapping.values() if isinstance(v, int) and not isinstance(v, bool)) != list(range(len(mapping))):
        raise lccore.ConfigError(f"{path}: expected IRIs mapped to the rows 0 to {len(mapping) - 1}, each once")
    return mapping


def load(path) -> Embeddings:
    """Read an embeddings directory. The weights are safetensors (tensors only); a missing or
    malformed file, or weights that do not fit the recorded model, is a one-line ConfigError
    naming the file."""
    import torch
    from pykeen.models import model_resolver
    from pykeen.triples import CoreTriplesFactory
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise lccore.ConfigError(f"{path}: no such embeddings directory (make one with lccore kg embed STORE --out DIR)")
    info = _read_json(path / "embedding.json", dict)
    if info.get("model") not in MODELS or not isinstance(info.get("dim"), int):
        raise lccore.ConfigError(f"{path / 'embedding.json'}: expected 'model' ({', '.join(MODELS)}) and an integer 'dim'")
    reciprocal = info.get("reciprocal", False)  # absent: embeddings from before the option, trained without
    if not isinstance(reciprocal, bool):
        raise lccore.ConfigError(f"{path / 'embedding.json'}: 'reciprocal': expected true or false, got {reciprocal!r}")
    entities, relations = _id_map(path / "entities.json"), _id_map(path / "relations.json")
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise lccore.ConfigError(f"{weights}: missing (not an embeddings directory from `lccore kg embed`)") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise lccore.ConfigError(f"{weights}: not a safetensors file ({' '.join(str(exc).split())})") from None
    _quiet_pykeen()
    shape = CoreTriplesFactory.create(mapped_triples=torch.empty(0, 3, dtype=torch.long), num_entities=len(entities), num_relations=len(relations),
                                      create_inverse_triples=reciprocal)
    model = model_resolver.make(info["model"], triples_factory=shape, embedding_dim=info["dim"], random_seed=0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise lccore.ConfigError(f"{weights}: does not fit a {info['model']} of dim {info['dim']} over {len(entities)} entities ({' '.join(str(exc).split())[:200]})") from None
    return Embeddings(model, entities, relations, info)


# --- prediction ---------------------------------------------------------------------------------


def _local_name(iri: str) -> str:
    for mark in ("#", "/", ":"):
        iri = iri.rsplit(mark, 1)[-1]
    return iri


def resolve(text: str, known: dict[str, int], store, what: str) -> str:
    """The IRI the embeddings know for ``text``: the IRI itself, an ``rdfs:label`` (any case), or
    the last segment of the IRI (``lives_in`` for ``urn:lccore:relation:lives_in``). Unknown or
    ambiguous: a one-line DataError."""
    if text in known:
        return text
    candidates = [row["iri"] for row in store.lookup(text, limit=100) if row["iri"] in known]
    if not candidates:
        wanted = text.strip().casefold()
        candidates = [iri for iri in known if _local_name(iri).casefold() == wanted]
    candidates = sorted(set(candidates))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise lccore.DataError(f"--{what}: '{text}' is ambiguous: {', '.join(candidates[:5])}{' ...' if len(candidates) > 5 else ''} (give the IRI)")
    kind = "relation" if what == "relation" else "entity"
    raise lccore.DataError(f"--{what}: '{text}' is no {kind} the embeddings were trained on (an IRI, label or IRI's last segment; retrain with lccore kg embed after adding it)")


def predict(embeddings: Embeddings, store, *, relation: str, head: str | None = None, tail: str | None = None, top: int = 10,
            include_known: bool = False, any_type: bool = False, report: dict | None = None) -> list[dict]:
    """The ``top`` best entities for the missing end, best first: ``{"iri", "label", "score",
    "probability", "stated"}``. ``score`` is the model's own (TransE: a negated distance);
    ``probability`` is its softmax over every entity, comparable across models. Ends the graph
    already states are left out unless ``include_known``; so are entities whose ``rdf:type`` the
    relation's stated ends never have (a person as a birthplace) unless ``any_type``: an untyped
    entity, or a relation whose ends are untyped, is not filtered. ``report`` (a dict) receives
    ``expected_types`` and ``left_out`` (the candidates ranked above the last one listed that the
    type check dropped)."""
    if (head is None) == (tail is None):
        raise lccore.ConfigError("kg predict: give --head or --tail (the end that is known), not both")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise lccore.ConfigError(f"kg predict: --top: expected an integer from 1 to {MAX_TOP:,}, got {top!r}")
    relation = resolve(relation, embeddings.relation_to_id, store, "relation")
    if head is not None:
        head = resolve(head, embeddings.entity_to_id, store, "head")
        rows = store.query(f"SELECT ?x WHERE {{ <{head}> <{relation}> ?x }}")["rows"]
    else:
        tail = resolve(tail, embeddings.entity_to_id, store, "tail")
        rows = store.query(f"SELECT ?x WHERE {{ ?x <{relation}> <{tail}> }}")["rows"]
    stated = {str(row["x"]) for row in rows}
    expected, types_of = (set(), {}) if any_type else end_types(store, relation, "tail" if head is not None else "head")
    left_out = 0
    scores = embeddings.scores(relation=relation, head=head, tail=tail)
    probabilities = scores.softmax(0)
    names = embeddings.id_to_entity
    out = []
    for index in scores.argsort(descending=True).tolist():
        iri = names[index]
        if iri in stated and not include_known:
            continue
        if iri == (head or tail):
            continue  # a link from an entity to itself is never what was asked
        if expected and types_of.get(iri) and not types_of[iri] & expected:
            left_out += 1
            continue
        out.append({"iri": iri, "score": float(scores[index]), "probability": float(probabilities[index]), "stated": iri in stated})
        if len(out) == top:
            break
    if report is not None:
        report.update(expected_types=sorted(expected), left_out=left_out)
    labels = _labels(store, [row["iri"] for row in out])
    for row in out:
        row["label"] = labels.get(row["iri"])
    return [{"head": head or row["iri"], "relation": relation, "tail": tail or row["iri"], **row} for row in out]


RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"


def end_types(store, relation: str, end: str) -> tuple[set[str], dict[str, set[str]]]:
    """The types the ``end`` (``"head"`` or ``"tail"``) of ``relation``'s stated links have (empty
    when any of those ends is untyped: the graph then says nothing about the relation's range),
    and every typed entity's types."""
    pattern = f"?x <{relation}> ?o" if end == "head" else f"?s <{relation}> ?x"
    rows = store.query(f"SELECT ?x ?t WHERE {{ {pattern} . OPTIONAL {{ ?x <{RDF_TYPE}> ?t }} }}")["rows"]
    if not rows or any(row.get("t") is None for row in rows):
        return set(), {}
    types_of: dict[str, set[str]] = {}
    for row in store.query(f"SELECT ?e ?t WHERE {{ ?e <{RDF_TYPE}> ?t }}")["rows"]:
        types_of.setdefault(str(row["e"]), set()).add(str(row["t"]))
    return {str(row["t"]) for row in rows}, types_of


def _labels(store, iris: list[str]) -> dict[str, str]:
    if not iris:
        return {}
    values = " ".join(f"<{iri}>" for iri in iris)
    rows = store.query(f"SELECT ?s ?label WHERE {{ VALUES ?s {{ {values} }} ?s <http://www.w3.org/2000/01/rdf-schema#label> ?label }}")["rows"]
    return {str(row["s"]): str(row["label"]) for row in rows}


# --- accepted predictions -----------------------------------------------------------------------


def accept_links(store, predictions: list[dict], *, threshold: float, embeddings_dir, model: str) -> int:
    """Write each prediction whose probability is at least ``threshold`` as an *inferred link*:
    an ``rdf:Statement`` typed ``lc:InferredLink`` with ``rdf:subject``, ``rdf:predicate``,
    ``rdf:object``, ``lc:method "link-prediction"``, ``lc:model``, ``lc:embeddings`` (the
    directory), ``lc:score``, ``lc:probability`` and ``lc:time``. The link itself is not asserted,
    so a query for facts, ``kg ask`` and the next training never take it for something a text
    said. One transaction; a link the same embeddings already wrote is skipped. Returns how many
    were written."""
    from rdflib import Literal, URIRef
    from rdflib.namespace import RDF, XSD

    from lccore_kg import VOCAB, statement_iri

    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise lccore.ConfigError(f"kg predict: --accept: expected a probability from 0 to 1, got {threshold!r}")
    now = Literal(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), datatype=XSD.dateTime)
    where = str(Path(embeddings_dir).resolve())
    triples = []
    for row in predictions:
        if row["probability"] < threshold or row["stated"]:
            continue
        link = (URIRef(row["head"]), URIRef(row["relation"]), URIRef(row["tail"]))
        identity = [("embeddings", Literal(where)), ("method", Literal("link-prediction")), ("model", Literal(model))]
        statement = statement_iri(link, identity)
        if store.query(f"ASK {{ <{statement}> ?p ?o }}")["value"]:
            continue
        triples += [
            (statement, RDF.type, RDF.Statement), (statement, RDF.type, VOCAB.InferredLink),
            (statement, RDF.subject, link[0]), (statement, RDF.predicate, link[1]), (statement, RDF.object, link[2]),
            *[(statement, VOCAB[key], value) for key, value in identity],
            (statement, VOCAB.score, Literal(row["score"])), (statement, VOCAB.probability, Literal(round(row["probability"], 6))),
            (statement, VOCAB.time, now),
        ]
    if triples:
        store.add(triples)
    return sum(1 for t in triples if t[1] == RDF.subject)
