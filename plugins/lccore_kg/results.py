"""Query results as text: aligned tables and JSON-LD (SPARQL results JSON is the kernel's:
:func:`lccore.components.sparql_results_json`)."""

from __future__ import annotations

import re

import pyoxigraph as ox

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


def jsonld(triples) -> str:
    quads = (ox_triple(t) for t in triples)
    return ox.serialize((ox.Triple(q.subject, q.predicate, q.object) for q in quads), format=ox.RdfFormat.JSON_LD).decode("utf-8")
