"""RDF terms and files at the boundary: rdflib terms <-> pyoxigraph terms, triple checks, the
file formats, and the one parser and one writer every backend uses (pyoxigraph's: no network,
no XML entities, positions in its errors)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from typing import Iterator
from pathlib import Path

import pyoxigraph as ox
from rdflib import BNode, Literal, URIRef
from rdflib.namespace import XSD

from lccore import ConfigError, DataError

from . import safety

XSD_STRING = str(XSD.string)
RDF_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"

#: Format names and file extensions -> pyoxigraph formats. N-Quads and TriG are read into (and
#: written from) the store's one graph: graph names are dropped on import.
FORMATS = {
    "turtle": ox.RdfFormat.TURTLE, "ttl": ox.RdfFormat.TURTLE,
    "nt": ox.RdfFormat.N_TRIPLES, "ntriples": ox.RdfFormat.N_TRIPLES, "n-triples": ox.RdfFormat.N_TRIPLES,
    "json-ld": ox.RdfFormat.JSON_LD, "jsonld": ox.RdfFormat.JSON_LD, "json": ox.RdfFormat.JSON_LD,
    "xml": ox.RdfFormat.RDF_XML, "rdf": ox.RdfFormat.RDF_XML, "owl": ox.RdfFormat.RDF_XML, "rdfxml": ox.RdfFormat.RDF_XML, "rdf-xml": ox.RdfFormat.RDF_XML,
    "nq": ox.RdfFormat.N_QUADS, "nquads": ox.RdfFormat.N_QUADS, "n-quads": ox.RdfFormat.N_QUADS,
    "trig": ox.RdfFormat.TRIG,
}
EXTENSIONS = ".ttl .nt .jsonld .json .rdf .xml .owl .nq .trig"
#: Predeclared in SPARQL on every backend, written into Turtle/TriG/RDF-XML exports, and used for
#: short terms in tables.
PREFIXES = safety.PREFIXES


def one_line(message, limit: int = 300) -> str:
    """A parser's or store's error message as one line (Oxigraph's span several), cut to ``limit``."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rdf_format(path, format: str | None = None) -> ox.RdfFormat:
    name = format.lower() if format else Path(path).suffix.lower().lstrip(".")
    if name not in FORMATS:
        what = f"format '{format}'" if format else f"file type '{Path(path).suffix}'"
        raise DataError(f"{path}: unknown RDF {what}; use one of {EXTENSIONS} or --format turtle|nt|json-ld|xml|nquads|trig")
    return FORMATS[name]


# --- terms --------------------------------------------------------------------------------------


def to_rdflib(term):
    """A pyoxigraph term as the rdflib term for the same RDF term."""
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return BNode(term.value)
    if isinstance(term, ox.Literal):
        if term.language:
            return Literal(term.value, lang=term.language)
        datatype = term.datatype.value
        # xsd:string is the datatype of every plain literal (RDF 1.1); rdflib writes it as none.
        return Literal(term.value) if datatype == XSD_STRING else Literal(term.value, datatype=URIRef(datatype))
    raise DataError(f"unsupported RDF term {term!r} (RDF-star triple terms are not supported)")


def to_oxigraph(term):
    """An rdflib term as a pyoxigraph term; ValueError for an invalid IRI or blank node id."""
    if isinstance(term, URIRef):
        return ox.NamedNode(str(term))
    if isinstance(term, BNode):
        return ox.BlankNode(str(term))
    if isinstance(term, Literal):
        if term.language:
            return ox.Literal(str(term), language=term.language)
        if term.datatype is not None:
            return ox.Literal(str(term), datatype=ox.NamedNode(str(term.datatype)))
        return ox.Literal(str(term))
    raise ValueError(f"expected an rdflib URIRef, BNode or Literal, got {type(term).__name__} {term!r}")


def normalise(term):
    """``"x"^^xsd:string`` is ``"x"`` (RDF 1.1); rdflib would keep them apart."""
    if isinstance(term, Literal) and term.datatype is not None and str(term.datatype) == XSD_STRING:
        return Literal(str(term))
    return term


def checked_triples(triples) -> list[tuple]:
    """The triples as a list of normalised rdflib term tuples; DataError naming the first bad one
    (so that a batch with a bad term is refused before anything is written)."""
    out = []
    for index, triple in enumerate(triples, 1):
        try:
            s, p, o = triple
        except (TypeError, ValueError):
            raise DataError(f"triple {index}: expected a (subject, predicate, object) tuple, got {triple!r}") from None
        for role, term, allowed in (("subject", s, (URIRef, BNode)), ("predicate", p, (URIRef,)), ("object", o, (URIRef, BNode, Literal))):
            if not isinstance(term, allowed):
                kinds = " or ".join(t.__name__ for t in allowed)
                raise DataError(f"triple {index}: {role} must be an rdflib {kinds}, got {type(term).__name__} {term!r}")
            try:
                to_oxigraph(term)
            except ValueError as exc:
                raise DataError(f"triple {index}: invalid {role} '{term}': {exc}") from None
        out.append((s, p, normalise(o)))
    return out


def nt(term) -> str:
    """A term in canonical N-Triples form."""
    return str(to_oxigraph(term))


def ox_triple(triple) -> ox.Quad:
    s, p, o = triple
    return ox.Quad(to_oxigraph(s), to_oxigraph(p), to_oxigraph(o), ox.DefaultGraph())


def short(term, prefixes: dict[str, str] | None = None) -> str:
    """N-Triples-like form with known prefixes: ``ex:alice``, ``"Alice"@en``, ``"3"^^xsd:integer``."""
    prefixes = prefixes or PREFIXES
    if isinstance(term, URIRef):
        return _short_iri(str(term), prefixes)
    if isinstance(term, Literal):
        lexical = str(ox.Literal(str(term)))  # quoted and escaped, on one line
        if term.language:
            return f"{lexical}@{term.language}"
        if term.datatype is not None:
            return f"{lexical}^^{_short_iri(str(term.datatype), prefixes)}"
        return lexical
    if isinstance(term, BNode):
        return f"_:{term}"
    return "" if term is None else str(term)


_LOCAL_NAME = re.compile(r"[A-Za-z_][\w\-]*")


def _short_iri(iri: str, prefixes: dict[str, str]) -> str:
    for prefix, namespace in prefixes.items():
        if iri.startswith(namespace) and _LOCAL_NAME.fullmatch(iri[len(namespace):]):
            return f"{prefix}:{iri[len(namespace):]}"
    return f"<{iri}>"


# --- files --------------------------------------------------------------------------------------


def parse_file(path, format: str | None = None, base: str | None = None) -> list[ox.Quad]:
    """Every triple of an RDF file as pyoxigraph quads in the default graph (see :func:`read_quads`)."""
    return list(read_quads(path, format, base))


def read_quads(path, format: str | None = None, base: str | None = None) -> Iterator[ox.Quad]:
    """The triples of an RDF file as pyoxigraph quads in the default graph, one at a time. Refuses
    what would reach outside the file (remote JSON-LD contexts, external XML entities; see
    :mod:`lccore_kg.safety`); a malformed file raises DataError "FILE:LINE: reason" when the
    reading gets there."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = rdf_format(path, format)
    safety.check_rdf_file(path, {ox.RdfFormat.JSON_LD: "json-ld", ox.RdfFormat.RDF_XML: "rdf-xml"}.get(fmt, ""))
    default = ox.DefaultGraph()
    try:
        with safety.no_network():
            # Fresh blank-node ids, so that two files that both say _:b0 do not merge.
            for q in ox.parse(path=str(path), format=fmt, base_iri=base, rename_blank_nodes=True):
                yield ox.Quad(q.subject, q.predicate, q.object, default)
    except SyntaxError as exc:
        if not exc.lineno:  # the RDF/XML parser gives no position: find the line it stops at
            exc.lineno = _failing_line(path, fmt, base)
        raise DataError(syntax_error_message(path, exc)) from None
    except MemoryError as exc:  # pyoxigraph's parsers hold one token in a buffer of at most 16 MiB
        raise DataError(f"{path}:{_failing_line(path, fmt, base)}: a term or line is too long to read ({one_line(exc)})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None


class _LineReader(io.RawIOBase):
    """A file handed to a parser one line per read; ``line``: the line of the last byte handed out."""

    def __init__(self, handle):
        self.handle, self.line, self._after_newline = handle, 1, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.handle.readline(len(buffer))
        if data:
            self.line += data.count(b"\n") - data.endswith(b"\n") + self._after_newline
            self._after_newline = data.endswith(b"\n")
        buffer[: len(data)] = data
        return len(data)


def _failing_line(path: Path, fmt, base: str | None) -> int | None:
    """The line at which pyoxigraph's parser fails on ``path``, read again a line at a time
    (it has read up to the token it refused); only called once a parse has failed."""
    with open(path, "rb") as handle:
        reader = _LineReader(handle)
        try:
            for _ in ox.parse(reader, format=fmt, base_iri=base):
                pass
        except (SyntaxError, MemoryError):
            return reader.line
    return None


def syntax_error_message(path, exc: SyntaxError) -> str:
    """pyoxigraph's "Parser error at line 4 between columns 1 and 4: reason" as "FILE:4: reason
    (column 1)"."""
    reason = re.sub(r"^Parser error (at|between) line \d+.*?: ", "", one_line(exc.msg or exc))
    if "No scheme found" in reason or "base IRI" in reason.lower():
        reason += " (a relative IRI: pass --base IRI)"
    if "LoadDocumentCallback" in reason:
        reason = "a JSON-LD context that is not inline is not loaded"
    if exc.lineno:
        column = f" (column {exc.offset})" if exc.offset else ""
        return f"{path}:{exc.lineno}: {reason}{column}"
    return f"{path}: {reason}"


def write_file(quads, path, format: str | None = None) -> None:
    """Write triples (pyoxigraph quads of the default graph) to an RDF file (see :func:`output`)."""
    fmt = rdf_format(path, format)
    if fmt in (ox.RdfFormat.N_QUADS, ox.RdfFormat.TRIG):
        items = quads
    else:
        items = (ox.Triple(q.subject, q.predicate, q.object) for q in quads)
    with output(path, fmt) as handle:
        ox.serialize(items, handle, fmt, prefixes=export_prefixes(fmt))


def export_prefixes(fmt) -> dict | None:
    return PREFIXES if fmt in (ox.RdfFormat.TURTLE, ox.RdfFormat.TRIG, ox.RdfFormat.RDF_XML) else None


@contextlib.contextmanager
def output(path, fmt):
    """A binary handle to write the RDF file ``path`` through: a new file beside it (created by
    lccore, named ``.NAME.XXXXXXXX.part``), moved onto ``path`` once complete. On any failure (a
    full disk, Ctrl-C) that file is removed and ``path`` is as it was. A ``path`` that exists and
    is not a regular file (``/dev/stdout``, a FIFO, ``/dev/full``) is written in place. Errors
    are DataError naming ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: folder {path.parent} does not exist")
    target = path.resolve() if path.is_symlink() else path  # replace the file, not the link
    partial = None
    try:
        if target.exists() and not target.is_file():
            handle = open(target, "wb")
        else:
            name = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
            # O_EXCL: never a file lccore did not make
            handle = open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
            partial = name
        with handle:
            yield handle
            if partial is not None:
                handle.flush()
                os.fsync(handle.fileno())
        if partial is not None:
            os.replace(partial, target)
    except BaseException as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        if isinstance(exc, (ValueError, SyntaxError)):  # e.g. an IRI RDF/XML cannot write as a property
            raise DataError(f"{path}: cannot write {fmt.name}: {one_line(exc)}") from None
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write: {exc.strerror or one_line(exc)}") from None
        raise
