"""The ``oxigraph`` backend: a persistent pyoxigraph (RocksDB) store in a directory.

One process at a time holds a store read-write (RocksDB's lock). Another process may open it
read-only meanwhile and sees everything committed before it opened it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from pathlib import Path

import pyoxigraph as ox
from rdflib.namespace import RDFS

from lccore import ConfigError, DataError

from .base import StoreBase, first_rows, one_line
from .terms import PREFIXES, export_prefixes, output, ox_triple, rdf_format, read_quads, to_oxigraph, to_rdflib


#: Files with at least this many triples are written with RocksDB's bulk loader, not one transaction.
BULK_LOAD_FROM = 100_000


class StoreLocked(ConfigError):
    """The store directory is open read-write in another process."""


class OxigraphStore(StoreBase):
    name = "oxigraph"
    label_index = True  # one writer at a time: this one, or (read-only) a snapshot

    def __init__(self, options):
        self.path = Path(options.path)
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: a file, not an Oxigraph store directory (to import it: lccore kg import STORE_DIR {path})")
        if path.is_dir() and any(path.iterdir()) and not (path / "CURRENT").exists():
            raise ConfigError(f"{path}: not an Oxigraph store (a non-empty directory without one); choose a new or empty directory")
        self.read_only = options.access == "read-only"
        if self.read_only:
            if not (path / "CURRENT").exists():
                raise ConfigError(f"{path}: no Oxigraph store there")
            self._store = self._open(ox.Store.read_only)
            return
        try:
            self._store = self._open(ox.Store)
        except ConfigError:  # locked by a writer, or a disk too full to open for writing
            if options.access != "auto" or not (path / "CURRENT").exists():
                raise
            self._store = self._open(ox.Store.read_only)
            self.read_only = True

    def _open(self, opener):
        try:
            return opener(str(self.path))
        except OSError as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(f"{self.path}: the store is open read-write in another process; writes must wait until it is closed") from None
            raise ConfigError(f"{self.path}: cannot open the Oxigraph store: {one_line(exc)}") from None

    @property
    def store(self) -> ox.Store:
        if self._store is None:
            raise ConfigError(f"{self.path}: the store is closed")
        return self._store

    def _writable(self) -> ox.Store:
        if self.read_only:
            raise ConfigError(f"{self.path}: the store is open read-only (another process holds it read-write)")
        return self.store

    def _add_all(self, triples, extra) -> int:
        store = self._writable()
        new = [q for q in map(ox_triple, triples) if q not in store]
        with _disk_errors(self.path):
            store.extend(new + [ox_triple(t) for t in extra])  # one transaction: all or nothing
        return len(new)

    def _query(self, sparql: str, kind: str, allow_network: bool, max_rows: int | None = None) -> dict:
        try:
            result = self.store.query(sparql, prefixes=PREFIXES)
            if isinstance(result, ox.QuerySolutions):
                names = [v.value for v in result.variables]
                solutions, truncated = first_rows(result, max_rows)  # read lazily: no more than is kept
                rows = [{name: to_rdflib(solution[name]) for name in names if solution[name] is not None} for solution in solutions]
                return {"type": "select", "vars": names, "rows": rows, "truncated": truncated}
            if isinstance(result, ox.QueryBoolean):
                return {"type": "ask", "value": bool(result)}
            triples, truncated = first_rows(result, max_rows)
            return {"type": "graph", "triples": [(to_rdflib(t.subject), to_rdflib(t.predicate), to_rdflib(t.object)) for t in triples], "truncated": truncated}
        except (SyntaxError, OSError, ValueError) as exc:
            raise ConfigError(f"SPARQL query failed: {one_line(exc)}") from None

    def _update(self, sparql: str, allow_network: bool) -> None:
        store = self._writable()
        try:
            store.update(sparql, prefixes=PREFIXES)
        except (SyntaxError, OSError, ValueError) as exc:
            raise ConfigError(f"SPARQL update failed: {one_line(exc)}") from None

    def _edges(self, nodes):
        store, default = self.store, ox.DefaultGraph()
        for node in nodes:
            term = to_oxigraph(node)
            for pattern in ((term, None, None), (None, None, term)):
                for quad in store.quads_for_pattern(*pattern, default):
                    yield to_rdflib(quad.subject), to_rdflib(quad.predicate), to_rdflib(quad.object)

    def _label_pairs(self):
        label = ox.NamedNode(str(RDFS.label))
        for quad in self.store.quads_for_pattern(None, label, None, ox.DefaultGraph()):
            if isinstance(quad.subject, ox.NamedNode):
                yield quad.subject.value, quad.object.value

    def load(self, path, format: str | None = None, *, base: str | None = None) -> int:
        store = self._writable()
        # The whole file is read once first, keeping nothing (a malformed one writes nothing), then
        # again into the store: a file of any size costs the memory of a few quads.
        count = sum(1 for _ in read_quads(path, format, base))
        self._changed()
        with _disk_errors(self.path):
            if count < BULK_LOAD_FROM:
                store.extend(list(read_quads(path, format, base)))  # one transaction
            else:  # 2-3x faster; only an I/O error midway could leave part of it. In slices: Oxigraph's
                # bulk loader buffers about a million quads (800 MB) before it writes, a slice at a time 180 MB
                quads = read_quads(path, format, base)
                while piece := list(itertools.islice(quads, BULK_LOAD_FROM)):
                    store.bulk_extend(piece)
        return count

    def dump(self, path, format: str | None = None) -> None:
        fmt = rdf_format(path, format)
        store = self.store
        with output(path, fmt) as handle:
            store.dump(handle, fmt, from_graph=ox.DefaultGraph(), prefixes=export_prefixes(fmt))

    def __len__(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self._stop_workers()
        store, self._store = self._store, None
        if store is not None and not self.read_only:
            with _disk_errors(self.path):
                store.flush()

    def _worker_store(self):
        self.store  # noqa: B018 - ConfigError if closed
        return functools.partial(_read_only, str(self.path))


def _read_only(path: str) -> OxigraphStore:
    from . import OxigraphOptions

    return OxigraphStore(OxigraphOptions(path=path, access="read-only"))


@contextlib.contextmanager
def _disk_errors(path):
    """A write that fails for the disk (full, read-only, over a size limit) as a one-line
    DataError naming the store; RocksDB keeps what was committed before."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{path}: cannot write the store: {exc.strerror or one_line(exc)}") from None
