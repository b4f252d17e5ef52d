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
#: Bounds of the options that cost time or memory.
MAX_EPOCHS = 10_000
MIN_DIM, MAX_DIM = 2, 1024
MAX_BATCH_SIZE = 1 << 16
MAX_NEGATIVES = 256
#: ``max_triples``: the default, and the most it may be raised to. With the default settings
#: 100,000 links take about 3 s per TransE epoch (7 s RotatE) on two CPU cores: 5 minutes for 100.
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
    model: str = "TransE"
    epochs: int = 100
    dim: int = 64
    seed: int = 0
    learning_rate: float = 0.01
    batch_size: int = 256
    #: Corrupted triples scored against each true one (PyKEEN's basic sampler): more is slower
    #: per epoch and, up to a point, better (UMLS, RotatE, 100 epochs: MRR 0.68 with 1, 0.76 with 32).
    negatives: int = 16

    def check(self, flags: bool = False) -> None:
        def refuse(name: str, expected: str, value):
            key = f"--{name.replace('_', '-')}" if flags else name
            raise lccore.ConfigError(f"kg embed: {key}: expected {expected}, got {value!r}")

        if self.model not in MODELS:
            refuse("model", " or ".join(MODELS), self.model)
        for name, low, high in (("epochs", 1, MAX_EPOCHS), ("dim", MIN_DIM, MAX_DIM), ("batch_size", 1, MAX_BATCH_SIZE), ("negatives", 1, MAX_NEGATIVES), ("seed", 0, 2**32 - 1)):
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
            if head is not None:
                batch = torch.tensor([[self.entity_to_id[head], r]], dtype=torch.long)
                return self.model.score_t(batch)[0].float().cpu()
            batch = torch.tensor([[r, self.entity_to_id[tail]]], dtype=torch.long)
            return self.model.score_h(batch)[0].float().cpu()


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


def triples_factory(links: Iterable[tuple[str, str, str]]):
    import numpy as np
    from pykeen.triples import TriplesFactory

    return TriplesFactory.from_labeled_triples(np.array(list(links), dtype=str).reshape(-1, 3))


def train(links: list[tuple[str, str, str]], options: TrainingOptions, *, progress: Callable[[float], None] | None = None) -> Embeddings:
    """Train ``options.model`` on ``links`` through :func:`pykeen.pipeline.pipeline`. The
    pipeline's evaluation runs on up to :data:`FIT_SAMPLE` of the training links: the filtered
    MRR it gives (``info["fit"]``) says how well the model learnt what it was shown, not how
    well it generalises."""
    options.check()
    import gc
    import warnings

    from pykeen.pipeline import pipeline

    _quiet_pykeen()
    training = triples_factory(links)
    step = max(1, training.num_triples // FIT_SAMPLE)
    fit_sample = training.clone_and_exchange_triples(training.mapped_triples[::step][:FIT_SAMPLE])
    gc.freeze()  # see _epoch_callback
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")  # PyTorch's, on a machine without a GPU
            result = pipeline(
                training=training,
                testing=fit_sample,
                model=options.model,
                model_kwargs={"embedding_dim": options.dim},
                optimizer="Adam",
                optimizer_kwargs={"lr": options.learning_rate},
                negative_sampler="basic",
                negative_sampler_kwargs={"num_negs_per_pos": options.negatives},
                training_kwargs={"num_epochs": options.epochs, "batch_size": options.batch_size, "callbacks": [_epoch_callback(progress)]},
                random_seed=options.seed,
                use_tqdm=False,
            )
    finally:
        gc.unfreeze()
    metrics = result.metric_results
    info = {
        **attrs.asdict(options),
        "links": training.num_triples,
        "entities": training.num_entities,
        "relations": training.num_relations,
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
    entities, relations = _id_map(path / "entities.json"), _id_map(path / "relations.json")
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise lccore.ConfigError(f"{weights}: missing (not an embeddings directory from `lccore kg embed`)") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise lccore.ConfigError(f"{weights}: not a safetensors file ({' '.join(str(exc).split())})") from None
    _quiet_pykeen()
    shape = CoreTriplesFactory.create(mapped_triples=torch.empty(0, 3, dtype=torch.long), num_entities=len(entities), num_relations=len(relations))
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


def predict(embeddings: Embeddings, store, *, relation: str, head: str | None = None, tail: str | None = None, top: int = 10, include_known: bool = False) -> list[dict]:
    """The ``top`` best entities for the missing end, best first: ``{"iri", "label", "score",
    "probability", "stated"}``. ``score`` is the model's own (TransE: a negated distance);
    ``probability`` is its softmax over every entity, comparable across models. Ends the graph
    already states are left out unless ``include_known``."""
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
        out.append({"iri": iri, "score": float(scores[index]), "probability": float(probabilities[index]), "stated": iri in stated})
        if len(out) == top:
            break
    labels = _labels(store, [row["iri"] for row in out])
    for row in out:
        row["label"] = labels.get(row["iri"])
    return [{"head": head or row["iri"], "relation": relation, "tail": tail or row["iri"], **row} for row in out]


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
