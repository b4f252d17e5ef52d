"""What every backend shares: provenance reification, the network rule on SPARQL, label lookup,
neighbourhoods, statistics. A backend implements the few primitives at the bottom of
:class:`StoreBase`; everything else is written once, here."""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from typing import Iterable

from rdflib import BNode, Literal, Namespace, URIRef
from rdflib.namespace import RDF, RDFS

import lccore
from lccore import ConfigError, DataError

from . import MAX_ROWS, safety, timed
from .terms import PREFIXES, checked_triples, normalise, nt, one_line  # noqa: F401 (one_line: for the backends)

#: The lccore vocabulary: provenance properties (lc:source, lc:sentence, lc:start, lc:end,
#: lc:model, lc:confidence, ...) and whatever else lccore writes into a graph.
VOCAB = Namespace(PREFIXES["lc"])
STATEMENT_PREFIX = "urn:lccore:statement:"
#: Upper bounds of the calls whose cost grows with an argument.
MAX_HOPS = 10
MAX_NEIGHBOURS = 1_000_000
MAX_LOOKUP = 10_000


def first_rows(items, max_rows: int | None) -> tuple[list, bool]:
    """At most ``max_rows`` of ``items`` (all for None), read lazily, and whether there were more."""
    if max_rows is None:
        return list(items), False
    rows = list(itertools.islice(items, max_rows + 1))
    return rows[:max_rows], len(rows) > max_rows
_WORKERS_LOCK = threading.Lock()
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def statement_iri(triple, items: list[tuple[str, object]]) -> URIRef:
    """``urn:lccore:statement:`` + the first 32 hex digits of the SHA-256 of the lines
    ``S``, ``P``, ``O``, then ``key=VALUE`` per provenance item (sorted), each term in canonical
    N-Triples form: the same extraction always gets the same IRI."""
    s, p, o = triple
    parts = [nt(s), nt(p), nt(o)] + [f"{key}={nt(value)}" for key, value in items]
    return URIRef(STATEMENT_PREFIX + hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32])


def provenance_items(provenance: dict, where: str) -> list[tuple[str, object]]:
    """A provenance dict as sorted ``(key, rdflib term)`` pairs; a list value gives one pair per
    item; None values are left out."""
    items = []
    for key, value in provenance.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise DataError(f"{where}: provenance key {key!r} is not a name (letters, digits, _ and -)")
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is None:
                continue
            term = item if isinstance(item, (URIRef, Literal, BNode)) else Literal(item if isinstance(item, (str, int, float, bool)) else str(item))
            items.append((key, normalise(term)))
    return sorted(items, key=lambda kv: (kv[0], nt(kv[1])))


def reify(triple, provenance: dict, where: str) -> list[tuple]:
    """The triples recording that ``triple`` came from ``provenance``."""
    items = provenance_items(provenance, where)
    statement = statement_iri(triple, items)
    s, p, o = triple
    out = [(statement, RDF.type, RDF.Statement), (statement, RDF.subject, s), (statement, RDF.predicate, p), (statement, RDF.object, o)]
    out += [(statement, VOCAB[key], value) for key, value in items]
    return out


def is_statement(term) -> bool:
    return isinstance(term, URIRef) and term.startswith(STATEMENT_PREFIX)


def _check_count(value, key: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: expected an integer from {low} to {high:,}, got {value!r}")


def _iri_ref(iri) -> str:
    return f"<{iri}>"


class StoreBase(lccore.KGBackend):
    """The :class:`lccore.KGBackend` behaviour on top of a few backend primitives."""

    name = "store"
    #: Keep an in-memory label index for :meth:`lookup` (stores no other process writes to).
    label_index = False
    _label_index: dict | None = None
    #: Counts writes through this object: timed queries' workers made before one are retired.
    _version = 0
    _workers: "timed.QueryWorkers | None" = None

    # --- the public interface ---------------------------------------------------------------------

    def add(self, triples: Iterable, provenance=None) -> int:
        """Add ``triples`` and their provenance in one transaction; returns how many of
        ``triples`` were new (reification statements are not counted)."""
        data = checked_triples(triples)
        if isinstance(provenance, (list, tuple)):
            if len(provenance) != len(data):
                raise DataError(f"add: {len(data)} triples but {len(provenance)} provenance records")
            records = list(provenance)
        else:
            records = [provenance] * len(data)
        extra = []
        for index, (triple, record) in enumerate(zip(data, records), 1):
            if record:
                extra += reify(triple, record, f"triple {index}")
        unique = list(dict.fromkeys(data))
        self._changed()
        return self._add_all(unique, list(dict.fromkeys(extra)))

    def query(self, sparql: str, *, allow_network: bool = False, timeout: float | None = None, max_rows: int | None = None) -> dict:
        """As :meth:`lccore.KGBackend.query`. With ``timeout`` (seconds) the query runs in a
        worker process (:mod:`lccore_kg.timed`), killed at the deadline."""
        kind = safety.check_query(sparql, allow_network=allow_network)
        if max_rows is not None:
            _check_count(max_rows, "query: max_rows", 1, MAX_ROWS)
        if timeout is None:
            result = self._query(sparql, kind, allow_network, max_rows)
        else:
            timeout = timed.check_timeout(timeout)
            with _WORKERS_LOCK:  # two threads' first timed queries share one pool
                if self._workers is None:
                    self._workers = timed.QueryWorkers()
            result = self._workers.run(self._worker_store, self._version, (sparql, kind, allow_network, max_rows), timeout)
        if max_rows is None:  # nothing was bounded: nothing to say
            result.pop("truncated", None)
        return result

    def update(self, sparql: str, *, allow_network: bool = False) -> None:
        safety.check_update(sparql, allow_network=allow_network)
        self._changed()
        self._update(sparql, allow_network)

    def lookup(self, label: str, *, limit: int = 10) -> list[dict]:
        """Entities whose ``rdfs:label`` equals ``label`` ignoring case and language tag. A store
        that only this process writes (``label_index``) scans its labels once and answers from
        an in-memory index until it is written again; others ask SPARQL each time."""
        _check_count(limit, "lookup: limit", 1, MAX_LOOKUP)
        wanted = label.strip().lower()
        if self.label_index:
            if self._label_index is None:
                index: dict[str, dict[str, str]] = {}
                for iri, text in self._label_pairs():
                    index.setdefault(text.lower(), {}).setdefault(iri, text)
                self._label_index = index
            return self._with_types(list(self._label_index.get(wanted, {}).items())[:limit])
        rows = self._query(
            f"SELECT ?s ?label WHERE {{ ?s {_iri_ref(RDFS.label)} ?label . FILTER(isIRI(?s) && LCASE(STR(?label)) = {nt(Literal(wanted))}) }}"
            f" LIMIT {int(limit) * 4}",
            "select",
            False,
        )["rows"]
        found: dict[str, str] = {}
        for row in rows:
            found.setdefault(str(row["s"]), str(row["label"]))
        return self._with_types(list(found.items())[:limit])

    def neighbours(self, iri: str, *, hops: int = 1, limit: int = 1000) -> list[tuple]:
        """Triples within ``hops`` of ``iri`` in either direction, nearest first. Provenance
        statements are left out, and a class reached through ``rdf:type`` is not expanded (it
        would bring in every member of the class)."""
        _check_count(hops, "neighbours: hops", 0, MAX_HOPS)
        _check_count(limit, "neighbours: limit", 1, MAX_NEIGHBOURS)
        start = iri if isinstance(iri, (URIRef, BNode)) else URIRef(str(iri))
        seen_nodes = {start}
        frontier = [start]
        out: list[tuple] = []
        seen_triples: set[tuple] = set()
        for _ in range(hops):
            next_frontier = []
            for triple in self._edges(frontier):
                s, p, o = triple
                if triple in seen_triples or is_statement(s) or is_statement(o):
                    continue
                seen_triples.add(triple)
                out.append(triple)
                if len(out) >= limit:
                    return out
                for node in (s, o):
                    if node not in seen_nodes and not isinstance(node, Literal) and not (node is o and p == RDF.type):
                        seen_nodes.add(node)
                        next_frontier.append(node)
            frontier = next_frontier
            if not frontier:
                break
        return out

    def close(self) -> None:
        self._stop_workers()

    def _stop_workers(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def _changed(self) -> None:
        self._label_index = None
        self._version += 1

    def results_json(self, result: dict):
        """As the kernel's, with Oxigraph's JSON-LD serialiser: what `lccore kg query --json` prints."""
        import json

        from .results import jsonld

        return json.loads(jsonld(result["triples"])) if result["type"] == "graph" else super().results_json(result)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- shared helpers ---------------------------------------------------------------------------

    def _with_types(self, found: list[tuple[str, str]]) -> list[dict]:
        if not found:
            return []
        values = " ".join(_iri_ref(iri) for iri, _ in found)
        types: dict[str, list[str]] = {}
        for row in self._query(f"SELECT ?s ?t WHERE {{ VALUES ?s {{ {values} }} ?s {_iri_ref(RDF.type)} ?t }}", "select", False)["rows"]:
            types.setdefault(str(row["s"]), []).append(str(row["t"]))
        return [{"iri": iri, "label": label, "types": sorted(types.get(iri, []))} for iri, label in found]

    # --- the primitives a backend implements ------------------------------------------------------

    def _add_all(self, triples: list[tuple], extra: list[tuple]) -> int:
        """Write ``triples`` and ``extra`` in one transaction; return how many of ``triples`` were new."""
        raise NotImplementedError

    def _query(self, sparql: str, kind: str, allow_network: bool) -> dict:
        """Run an already checked query of ``kind``."""
        raise NotImplementedError

    def _update(self, sparql: str, allow_network: bool) -> None:
        raise NotImplementedError

    def _edges(self, nodes: list) -> Iterable[tuple]:
        """Every triple whose subject or object is one of ``nodes``."""
        raise NotImplementedError

    def _label_pairs(self) -> Iterable[tuple[str, str]]:
        """``(iri, label text)`` for every ``rdfs:label`` of an IRI (with ``label_index``)."""
        raise NotImplementedError

    def _worker_store(self):
        """A picklable callable that builds, in a worker process, a store answering ``_query``
        as this one does now (for timed queries)."""
        raise NotImplementedError


def stats(store, *, top: int = 10) -> dict:
    """Counts for ``lccore kg stats``: triples; facts (the triples outside provenance and
    inferred-link records); distinct subjects, predicates and classes; the most used predicates
    (``top``, at most :data:`MAX_LOOKUP`); provenance statements (where stated facts were read);
    and inferred links (``lc:InferredLink`` statements from link prediction, never asserted as
    facts), in all and per model."""
    _check_count(top, "stats: top", 1, MAX_LOOKUP)

    def count(what: str, where: str) -> int:
        rows = store.query(f"SELECT (COUNT({what}) AS ?n) WHERE {{ {where} }}")["rows"]
        return int(rows[0]["n"]) if rows else 0

    rdf_type = _iri_ref(RDF.type)
    inferred = f"?st {rdf_type} {_iri_ref(VOCAB.InferredLink)}"
    top_rows = store.query(f"SELECT ?p (COUNT(*) AS ?n) WHERE {{ ?s ?p ?o }} GROUP BY ?p ORDER BY DESC(?n) ?p LIMIT {int(top)}")["rows"]
    by_model = store.query(f"SELECT ?m (COUNT(DISTINCT ?st) AS ?n) WHERE {{ {inferred} . OPTIONAL {{ ?st {_iri_ref(VOCAB.model)} ?m }} }} GROUP BY ?m ORDER BY ?m")["rows"]
    return {
        "triples": len(store),
        "facts": count("*", f'?s ?p ?o . FILTER(!STRSTARTS(STR(?s), "{STATEMENT_PREFIX}"))'),
        "subjects": count("DISTINCT ?s", "?s ?p ?o"),
        "predicates": count("DISTINCT ?p", "?s ?p ?o"),
        "classes": count("DISTINCT ?c", f"?s {rdf_type} ?c"),
        "provenance_statements": count("DISTINCT ?st", f"?st {rdf_type} {_iri_ref(RDF.Statement)} . FILTER NOT EXISTS {{ {inferred} }}"),
        "inferred_links": sum(int(r["n"]) for r in by_model),
        "inferred_links_by_model": {str(r.get("m", "")): int(r["n"]) for r in by_model if int(r["n"])},
        "top_predicates": [{"predicate": str(r["p"]), "triples": int(r["n"])} for r in top_rows],
    }
