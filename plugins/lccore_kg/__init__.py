"""First-party plugin: knowledge-graph stores (``kg_backend`` components).

- ``oxigraph``: a persistent pyoxigraph store in a directory (the one to use for anything that
  must survive a restart);
- ``rdflib-memory``: an rdflib graph in memory;
- ``sparql-endpoint``: any SPARQL 1.1 endpoint over HTTP.

All three follow :class:`lccore.KGBackend` with rdflib terms, record provenance by reification in
the :data:`VOCAB` namespace, and refuse SPARQL and files that would reach the network (see
:mod:`lccore_kg.safety`). ``open_store(spec)`` opens one from a short spec, as the ``lccore kg``
commands do. Importing this module is cheap: rdflib and pyoxigraph load when a store is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import attrs

import lccore

#: The most rows (or triples) a query may be asked to read (``max_rows``, ``kg query --max-rows``).
MAX_ROWS = 100_000_000


@attrs.define
class RdflibMemoryOptions:
    source: Optional[str] = attrs.field(default=None, metadata={"doc": "RDF file read when the store opens; the store itself is not saved."})


@attrs.define
class OxigraphOptions:
    path: str = attrs.field(metadata={"doc": "Directory of the store; created when missing (unless read-only)."})
    access: Literal["read-write", "read-only", "auto"] = attrs.field(
        default="read-write",
        metadata={"doc": "auto: read-write, or read-only when another process has the store open read-write."},
    )


@attrs.define
class SparqlEndpointOptions:
    query_url: str = attrs.field(metadata={"doc": "SPARQL 1.1 query endpoint, e.g. http://127.0.0.1:7878/query."})
    update_url: Optional[str] = attrs.field(default=None, metadata={"doc": "SPARQL 1.1 update endpoint; default: query_url."})
    user_env: Optional[str] = attrs.field(default=None, metadata={"doc": "Name of the environment variable holding the basic-auth user."})
    password_env: Optional[str] = attrs.field(default=None, metadata={"doc": "Name of the environment variable holding the basic-auth password."})
    timeout: float = attrs.field(default=30.0, metadata={"doc": "Seconds to wait for an answer (at most a day).", "min": 0.1, "max": 86_400.0})


@lccore.hookimpl
def register_kg_backends(register):
    def make_oxigraph(options: OxigraphOptions):
        from .oxigraph_store import OxigraphStore

        return OxigraphStore(options)

    def make_rdflib_memory(options: RdflibMemoryOptions):
        from .rdflib_memory import RdflibMemoryStore

        return RdflibMemoryStore(options)

    def make_sparql_endpoint(options: SparqlEndpointOptions):
        from .sparql_endpoint import SparqlEndpointStore

        return SparqlEndpointStore(options)

    register("oxigraph", make_oxigraph, options=OxigraphOptions, description="Persistent pyoxigraph (RocksDB) store in a directory.")
    register("rdflib-memory", make_rdflib_memory, options=RdflibMemoryOptions, description="rdflib graph in memory, not saved.")
    register("sparql-endpoint", make_sparql_endpoint, options=SparqlEndpointOptions, description="Any SPARQL 1.1 endpoint over HTTP.")


def store_spec(spec) -> tuple[str, dict]:
    """``(backend name, options)`` for a store spec: ``memory``; an ``http(s)://`` endpoint URL
    (a URL ending in ``/query`` updates at ``/update``, any other URL at itself); a mapping
    ``{backend: NAME, option: value, ...}``; anything else is an Oxigraph store directory."""
    if isinstance(spec, dict):
        options = dict(spec)
        if "backend" not in options:
            raise lccore.ConfigError("store: a mapping needs a 'backend' key (oxigraph, rdflib-memory, sparql-endpoint)")
        return options.pop("backend"), options
    spec = str(spec)
    if spec == "memory":
        return "rdflib-memory", {}
    if re.match(r"https?://", spec):
        update = spec[: -len("/query")] + "/update" if spec.endswith("/query") else spec
        return "sparql-endpoint", {"query_url": spec, "update_url": update}
    return "oxigraph", {"path": spec}


def open_store(spec, *, write: bool = True, engine: "lccore.Engine | None" = None) -> "lccore.KGBackend":
    """Open a store from a spec (see :func:`store_spec`). With ``write=False`` an Oxigraph
    directory must exist already, and is opened read-only when another process holds it."""
    name, options = store_spec(spec)
    if name == "oxigraph":
        if not write and not Path(options["path"]).exists():
            raise lccore.ConfigError(f"{options['path']}: no such store (give a store directory, 'memory', or an http(s) SPARQL endpoint URL)")
        options.setdefault("access", "read-write" if write else "auto")
    engine = engine or lccore.Engine()
    return engine.create("kg_backend", name, options, key="store")


def infer_rdfs(store) -> "lccore.KGBackend":
    """An in-memory copy of ``store`` with its RDFS closure (owlrl, without axiomatic triples).
    It copies every triple: meant for small graphs."""
    from owlrl import DeductiveClosure, RDFS_Semantics

    from . import safety
    from .rdflib_memory import RdflibMemoryStore

    copy = RdflibMemoryStore()
    copy._write(store.query("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }")["triples"])
    with safety.no_network():
        DeductiveClosure(RDFS_Semantics, axiomatic_triples=False, datatype_axioms=False).expand(copy.graph)
    return copy


def __getattr__(name: str):
    # VOCAB and friends need rdflib: loaded on first use, so that importing the plugin stays cheap.
    if name in ("VOCAB", "STATEMENT_PREFIX", "statement_iri", "stats"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module 'lccore_kg' has no attribute {name!r}")


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)


@lccore.hookimpl
def register_routes(server):
    from .routes import add_routes

    add_routes(server)
