"""Query results as text: aligned tables, SPARQL 1.1 results JSON, JSON-LD."""

from __future__ import annotations

import re

import pyoxigraph as ox
from rdflib import BNode, URIRef

from .terms import PREFIXES, ox_triple, short


def query_prefixes(sparql: str) -> dict[str, str]:
    """The query's own PREFIX declarations, then the usual ones (for short terms in tables)."""
    declared = {m.group(1): m.group(2) for m in re.finditer(r"PREFIX\s+([\w\-.]*):\s*<([^>]*)>", sparql, flags=re.I)}
    return {**declared, **{k: v for k, v in PREFIXES.items() if k not in declared}}


def table(result: dict, prefixes: dict[str, str] | None = None) -> str:
    if result["type"] == "ask":
        return "true" if result["value"] else "false"
    if result["type"] == "select":
        header = result["vars"]
        rows = [[short(row.get(name), prefixes) for name in header] for row in result["rows"]]
    else:
        header = ["subject", "predicate", "object"]
        rows = [[short(term, prefixes) for term in triple] for triple in result["triples"]]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


def _binding(term) -> dict:
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


def sparql_json(result: dict) -> dict:
    """SPARQL 1.1 Query Results JSON for a SELECT or ASK result."""
    if result["type"] == "ask":
        return {"head": {}, "boolean": result["value"]}
    bindings = [{name: _binding(term) for name, term in row.items()} for row in result["rows"]]
    return {"head": {"vars": result["vars"]}, "results": {"bindings": bindings}}


def jsonld(triples) -> str:
    quads = (ox_triple(t) for t in triples)
    return ox.serialize((ox.Triple(q.subject, q.predicate, q.object) for q in quads), format=ox.RdfFormat.JSON_LD).decode("utf-8")
