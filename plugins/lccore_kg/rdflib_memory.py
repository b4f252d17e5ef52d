"""The ``rdflib-memory`` backend: an rdflib graph in memory (nothing is kept after close)."""

from __future__ import annotations

import contextlib
import functools

import pyoxigraph as ox
from rdflib import Graph, URIRef
from rdflib.namespace import RDF, RDFS

from lccore import ConfigError

from . import safety
from .base import StoreBase, first_rows, one_line
from .terms import PREFIXES, ox_triple, parse_file, to_rdflib, write_file


class RdflibMemoryStore(StoreBase):
    name = "rdflib-memory"
    label_index = True

    def __init__(self, options=None, *, graph: Graph | None = None):
        self.graph = graph if graph is not None else Graph()
        for prefix, namespace in PREFIXES.items():
            self.graph.bind(prefix, namespace)
        if options is not None and options.source:
            self.load(options.source)

    def _add_all(self, triples, extra) -> int:
        graph = self.graph
        pending = [t for t in dict.fromkeys(triples + extra) if t not in graph]
        wanted = set(triples)
        self._write(pending)
        return sum(1 for t in pending if t in wanted)

    def _write(self, pending: list[tuple]) -> None:
        """Add triples none of which is in the graph yet; on any failure take them all back
        (rdflib's memory store has no transactions)."""
        graph = self.graph
        self._changed()
        try:
            graph.addN((s, p, o, graph) for s, p, o in pending)
        except BaseException:
            for triple in pending:
                graph.remove(triple)
            raise

    def _query(self, sparql: str, kind: str, allow_network: bool, max_rows: int | None = None) -> dict:
        guard = contextlib.nullcontext() if allow_network else safety.no_network()
        try:
            with guard:
                result = self.graph.query(sparql)
                if kind == "select":
                    names = [str(v) for v in result.vars]
                    solutions, truncated = first_rows(result, max_rows)
                    rows = [{str(k): v for k, v in row.asdict().items() if v is not None} for row in solutions]
                    return {"type": "select", "vars": names, "rows": rows, "truncated": truncated}
                if kind == "ask":
                    return {"type": "ask", "value": bool(result.askAnswer)}
                triples, truncated = first_rows(result, max_rows)
                return {"type": "graph", "triples": triples, "truncated": truncated}
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"SPARQL query failed: {type(exc).__name__}: {one_line(exc)}") from None

    def _update(self, sparql: str, allow_network: bool) -> None:
        guard = contextlib.nullcontext() if allow_network else safety.no_network()
        try:
            with guard:
                self.graph.update(sparql)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"SPARQL update failed: {type(exc).__name__}: {one_line(exc)}") from None

    def _edges(self, nodes):
        triples = self.graph.triples
        for node in nodes:
            yield from triples((node, None, None))
            yield from triples((None, None, node))

    def _label_pairs(self):
        for s, _, o in self.graph.triples((None, RDFS.label, None)):
            if isinstance(s, URIRef):
                yield str(s), str(o)

    def _with_types(self, found):
        return [{"iri": iri, "label": text, "types": sorted(str(t) for t in self.graph.objects(URIRef(iri), RDF.type))} for iri, text in found]

    def load(self, path, format: str | None = None, *, base: str | None = None) -> int:
        quads = parse_file(path, format, base)
        triples = [(to_rdflib(q.subject), to_rdflib(q.predicate), to_rdflib(q.object)) for q in quads]
        pending = triples if len(self.graph) == 0 else [t for t in triples if t not in self.graph]
        self._write(list(dict.fromkeys(pending)))
        return len(quads)

    def dump(self, path, format: str | None = None) -> None:
        write_file((ox_triple(t) for t in sorted(self.graph)), path, format)  # sorted: subjects grouped, stable output

    def __len__(self) -> int:
        return len(self.graph)

    def _worker_store(self):
        # The graph goes to the worker as N-Triples (pyoxigraph's writer and parser: fast, and
        # blank node ids kept).
        data = ox.serialize((ox_triple(t) for t in self.graph), format=ox.RdfFormat.N_TRIPLES)
        return functools.partial(_copy, data)


def _copy(data: bytes) -> RdflibMemoryStore:
    store = RdflibMemoryStore()
    store.graph.addN((to_rdflib(q.subject), to_rdflib(q.predicate), to_rdflib(q.object), store.graph) for q in ox.parse(data, format=ox.RdfFormat.N_TRIPLES))
    return store
