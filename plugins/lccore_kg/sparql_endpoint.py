"""The ``sparql-endpoint`` backend: any SPARQL 1.1 endpoint over HTTP (protocol: POST, form
encoded). Files are parsed here and sent as one ``INSERT DATA``; blank nodes sent that way are
new blank nodes on the server every time (SPARQL semantics), so only IRI/literal triples are
idempotent, and a neighbourhood does not cross blank nodes."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pyoxigraph as ox
from rdflib import BNode, Literal, URIRef

from lccore import ConfigError

from . import safety
from .base import StoreBase, first_rows, one_line
from .terms import PREFIXES, nt, ox_triple, parse_file, to_rdflib, write_file

#: The prefixes every backend predeclares, sent ahead of each request (a query's own declarations,
#: which come later, win).
PROLOGUE = "".join(f"PREFIX {prefix}: <{namespace}>\n" for prefix, namespace in PREFIXES.items())
RESULTS_JSON = "application/sparql-results+json"
N_TRIPLES = "application/n-triples"
#: Triples per existence check (a VALUES block) when counting what ``add`` makes new.
CHECK_CHUNK = 200


def _json_term(binding: dict):
    kind, value = binding["type"], binding["value"]
    if kind == "uri":
        return URIRef(value)
    if kind == "bnode":
        return BNode(value)
    if binding.get("xml:lang"):
        return Literal(value, lang=binding["xml:lang"])
    datatype = binding.get("datatype")
    return to_rdflib(ox.Literal(value, datatype=ox.NamedNode(datatype))) if datatype else Literal(value)


#: The largest answer read from an endpoint (what it sends is held whole to be parsed).
MAX_ANSWER_BYTES = 1 << 30


class SparqlEndpointStore(StoreBase):
    name = "sparql-endpoint"

    def __init__(self, options):
        self.options = options
        self.query_url = options.query_url
        self.update_url = options.update_url or options.query_url
        self.timeout = options.timeout
        self._headers = {}
        if options.user_env or options.password_env:
            missing = [name for name in (options.user_env, options.password_env) if not name or name not in os.environ]
            if missing:
                raise ConfigError(f"sparql-endpoint: basic auth needs user_env and password_env set to names of environment variables that exist; missing: {', '.join(map(str, missing))}")
            token = base64.b64encode(f"{os.environ[options.user_env]}:{os.environ[options.password_env]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def _post(self, url: str, field: str, text: str, accept: str = "*/*") -> tuple[str, bytes]:
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode({field: text}).encode("utf-8"),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": accept, **self._headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(MAX_ANSWER_BYTES + 1)  # an endpoint's answer is bounded like a request's
                if len(body) > MAX_ANSWER_BYTES:
                    raise ConfigError(f"SPARQL endpoint {url} answered more than {MAX_ANSWER_BYTES:,} bytes: add a LIMIT to the query")
                return response.headers.get_content_type(), body
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", errors="replace").strip().splitlines()
            raise ConfigError(f"SPARQL endpoint {url} answered {exc.code} {exc.reason}: {one_line(body[0]) if body else ''}") from None
        except urllib.error.URLError as exc:
            raise ConfigError(f"cannot reach SPARQL endpoint {url}: {exc.reason}") from None
        except TimeoutError:
            raise ConfigError(f"SPARQL endpoint {url} did not answer within {self.timeout:g} s") from None

    def _query(self, sparql: str, kind: str, allow_network: bool, max_rows: int | None = None) -> dict:
        accept = RESULTS_JSON if kind in ("select", "ask") else f"{N_TRIPLES}, text/turtle;q=0.5"
        content_type, body = self._post(self.query_url, "query", PROLOGUE + sparql, accept)
        if kind in ("select", "ask"):
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
                raise ConfigError(f"SPARQL endpoint {self.query_url} answered {content_type}, not SPARQL results JSON") from None
            try:
                if "boolean" in document:
                    return {"type": "ask", "value": bool(document["boolean"])}
                names = document["head"]["vars"]
                bindings, truncated = first_rows(document["results"]["bindings"], max_rows)
                rows = [{k: _json_term(v) for k, v in binding.items()} for binding in bindings]
            except (KeyError, TypeError, AttributeError, ValueError, SyntaxError):
                raise ConfigError(f"SPARQL endpoint {self.query_url} answered JSON that is not SPARQL 1.1 results JSON") from None
            return {"type": "select", "vars": names, "rows": rows, "truncated": truncated}
        fmt = ox.RdfFormat.from_media_type(content_type) or ox.RdfFormat.N_TRIPLES
        if fmt == ox.RdfFormat.RDF_XML:  # an endpoint's answer gets the same guard as a file
            safety.check_xml(io.BytesIO(body), f"SPARQL endpoint {self.query_url} answer")
        try:
            quads, truncated = first_rows(ox.parse(body, format=fmt), max_rows)
        except SyntaxError as exc:
            raise ConfigError(f"SPARQL endpoint {self.query_url} answered malformed {content_type}: {exc}") from None
        return {"type": "graph", "triples": [(to_rdflib(q.subject), to_rdflib(q.predicate), to_rdflib(q.object)) for q in quads], "truncated": truncated}

    def _update(self, sparql: str, allow_network: bool) -> None:
        self._post(self.update_url, "update", PROLOGUE + sparql)

    def _insert(self, quads) -> None:
        lines = "\n".join(f"{q.subject} {q.predicate} {q.object} ." for q in quads)
        if lines:
            self._post(self.update_url, "update", f"INSERT DATA {{\n{lines}\n}}")

    def _existing(self, triples: list[tuple]) -> set[tuple]:
        found: set[tuple] = set()
        checkable = [t for t in triples if not any(isinstance(x, BNode) for x in t)]
        for start in range(0, len(checkable), CHECK_CHUNK):
            values = " ".join(f"({nt(s)} {nt(p)} {nt(o)})" for s, p, o in checkable[start : start + CHECK_CHUNK])
            rows = self._query(f"SELECT ?s ?p ?o WHERE {{ VALUES (?s ?p ?o) {{ {values} }} ?s ?p ?o }}", "select", False)["rows"]
            found.update((r["s"], r["p"], r["o"]) for r in rows)
        return found

    def _add_all(self, triples, extra) -> int:
        existing = self._existing(triples)
        new = [t for t in triples if t not in existing]
        self._insert(map(ox_triple, new + extra))  # one request, one transaction on the server
        return len(new)

    def _edges(self, nodes):
        iris = [n for n in nodes if isinstance(n, URIRef)]
        for start in range(0, len(iris), 100):
            values = " ".join(nt(n) for n in iris[start : start + 100])
            sparql = f"SELECT ?s ?p ?o WHERE {{ {{ VALUES ?s {{ {values} }} ?s ?p ?o }} UNION {{ VALUES ?o {{ {values} }} ?s ?p ?o }} }}"
            for row in self._query(sparql, "select", False)["rows"]:
                yield row["s"], row["p"], row["o"]

    def load(self, path, format: str | None = None, *, base: str | None = None) -> int:
        quads = parse_file(path, format, base)
        self._insert(quads)
        return len(quads)

    def dump(self, path, format: str | None = None) -> None:
        triples = self._query("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", "construct", False)["triples"]
        write_file((ox_triple(t) for t in sorted(triples)), path, format)

    def _worker_store(self):
        return functools.partial(SparqlEndpointStore, self.options)

    def __len__(self) -> int:
        rows = self._query("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }", "select", False)["rows"]
        return int(rows[0]["n"]) if rows else 0

