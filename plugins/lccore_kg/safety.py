"""No network unless asked: what a SPARQL request or an RDF file may reach.

SPARQL is parsed with rdflib's parser *before* it reaches any store, and refused when it would
reach the network: ``SERVICE`` (any), ``LOAD`` (any), and ``FROM`` / ``FROM NAMED`` / ``USING``
with an http(s)/ftp IRI. Parsing first matters for Oxigraph, which runs ``SERVICE`` with its own
HTTP client, where no Python-level guard can see it.

RDF files are read by pyoxigraph's parser, which loads no remote JSON-LD context and expands no
external XML entity; :func:`check_rdf_file` refuses both up front with a clear message.
:func:`no_network` is a second line: while it is active, the current thread cannot open a
connection or resolve a host name through Python (an audit hook), whatever library tries.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
import sys
from pathlib import Path

from lccore import ConfigError, DataError

REMOTE_SCHEMES = ("http", "https", "ftp", "ftps")
#: Predeclared in every backend (the same as lccore_kg.terms.PREFIXES).
PREFIXES = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "lc": "https://w3id.org/lccore/vocab#",
}
HINT = "network access is off (pass --allow-network)"


def is_remote(iri) -> bool:
    scheme = str(iri).split(":", 1)[0].lower() if ":" in str(iri) else ""
    return scheme in REMOTE_SCHEMES


# --- SPARQL -------------------------------------------------------------------------------------


def check_query(sparql: str, *, allow_network: bool = False) -> str:
    """Parse a SPARQL query and return its kind (``select``, ``ask``, ``construct``,
    ``describe``); ConfigError for a syntax error or, unless ``allow_network``, a request that
    would reach the network."""
    kind, refusals = _analyse(sparql, "query")
    if refusals and not allow_network:
        raise ConfigError(refusals[0])
    return kind


def check_update(sparql: str, *, allow_network: bool = False) -> None:
    """The same for a SPARQL update (``LOAD``, ``USING`` and ``SERVICE`` in a ``WHERE``)."""
    _, refusals = _analyse(sparql, "update")
    if refusals and not allow_network:
        raise ConfigError(refusals[0])


@functools.lru_cache(maxsize=512)
def _analyse(sparql: str, mode: str) -> tuple[str, tuple[str, ...]]:
    from rdflib.plugins.sparql import parser
    from rdflib.plugins.sparql.algebra import translatePrologue

    if not isinstance(sparql, str) or not sparql.strip():
        raise ConfigError(f"SPARQL {mode} is empty")
    try:
        tree = parser.parseQuery(sparql) if mode == "query" else parser.parseUpdate(sparql)
    except Exception as exc:
        raise ConfigError(_syntax_message(sparql, exc, mode)) from None
    refusals: list[str] = []
    try:
        if mode == "query":
            prologue = translatePrologue(tree[0], None, initNs=PREFIXES)
            _walk(tree[1], prologue, refusals)
            return tree[1].name.replace("Query", "").lower(), tuple(refusals)
        prologue = None
        for prologue_tree, request in zip(tree.prologue, tree.request or []):
            prologue = translatePrologue(prologue_tree, None, initNs=PREFIXES if prologue is None else None, prologue=prologue)
            _walk(request, prologue, refusals)
    except ConfigError:
        raise
    except Exception as exc:  # e.g. an undeclared prefix
        raise ConfigError(f"SPARQL {mode}: {exc}") from None
    return "update", tuple(refusals)


def _syntax_message(sparql: str, exc: Exception, mode: str) -> str:
    line, column = getattr(exc, "lineno", None), getattr(exc, "col", None)
    reason = re.sub(r"\s*\(at char \d+\), \(line:\d+, col:\d+\)$", "", str(exc)).strip()
    if mode == "query" and _parses_as(sparql, "update"):
        return "this is a SPARQL update, not a query (use update(), or `lccore kg query --update`)"
    if mode == "update" and _parses_as(sparql, "query"):
        return "this is a SPARQL query, not an update (use query(), or leave out --update)"
    where = f" at line {line}, column {column}" if line else ""
    return f"SPARQL syntax error{where}: {reason}"


def _parses_as(sparql: str, mode: str) -> bool:
    from rdflib.plugins.sparql import parser

    try:
        parser.parseQuery(sparql) if mode == "query" else parser.parseUpdate(sparql)
        return True
    except Exception:  # pyparsing's errors and rdflib's own: any of them means "not this kind"
        return False


def _walk(node, prologue, refusals: list[str]) -> None:
    """Collect, in query order, every part of a parse tree that would reach the network."""
    from rdflib.plugins.sparql.parserutils import CompValue

    if isinstance(node, CompValue):
        name = node.name
        if name == "ServiceGraphPattern":
            refusals.append(_refusal("SERVICE", node.get("term"), prologue))
        elif name == "Load":
            refusals.append(_refusal("LOAD", node.get("iri"), prologue))
        elif name in ("DatasetClause", "UsingClause"):
            keyword = "FROM" if name == "DatasetClause" else "USING"
            for part, label in (("default", keyword), ("named", f"{keyword} NAMED")):
                if node.get(part) is not None and is_remote(_resolve(node.get(part), prologue)):
                    refusals.append(_refusal(label, node.get(part), prologue))
        for value in node.values():
            _walk(value, prologue, refusals)
    elif isinstance(node, (list, tuple)) or type(node).__name__ == "ParseResults":
        for value in node:
            _walk(value, prologue, refusals)


def _resolve(term, prologue):
    return prologue.absolutize(term) if prologue is not None else term


def _refusal(keyword: str, term, prologue) -> str:
    from rdflib import Variable

    if isinstance(term, Variable):
        shown = f"?{term}"
    else:
        shown = f"<{_resolve(term, prologue)}>"
    return f"SPARQL {keyword} {shown} refused: {HINT}"


# --- RDF files ----------------------------------------------------------------------------------

_XML_REFERENCE = re.compile(r"&([\w:][\w.:\-]*);")
#: The same, over the raw UTF-8 bytes of a document (an XML name may hold any non-ASCII letter).
_XML_REFERENCE_BYTES = re.compile(rb"&([\w:\x80-\xff][\w.:\-\x80-\xff]*);")
#: Entity expansion allowed in an RDF/XML file: this much beyond ten times the file's own size.
XML_EXPANSION_SLACK = 16 << 20
#: Deepest element nesting read from RDF/XML (pyoxigraph's RDF/XML parser takes time quadratic
#: in the depth: 20,000 levels take seconds, 200,000 minutes).
MAX_XML_DEPTH = 1000
_CHUNK = 1 << 20


class _Refused(Exception):
    """Stops expat from inside a handler; carries the DataError to raise."""


def check_rdf_file(path, kind: str) -> None:
    """Refuse, before parsing, what would make a parser reach outside the file or blow up: for
    ``kind`` "rdf-xml" an external DTD, external or parameter entities, internal entities that
    expand to far more than the file (pyoxigraph expands entities without a limit: a "billion
    laughs" file would exhaust memory), nesting deeper than :data:`MAX_XML_DEPTH`, and anything
    that is not well-formed XML; for "json-ld" a context given by reference."""
    path = Path(path)
    if kind == "rdf-xml":
        with open(path, "rb") as handle:
            check_xml(handle, str(path))
    elif kind == "json-ld":
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            references = list(_context_references(document))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not valid UTF-8") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply (at most about {sys.getrecursionlimit()} levels)") from None
        for key, reference in references:
            reason = HINT if is_remote(reference) else "only inline contexts are read"
            raise DataError(f"{path}: JSON-LD {key} '{reference}' refused: {reason}; put the context inline")


def check_xml(stream, name: str) -> None:
    """Read a whole XML document (a binary stream, from its current position) with expat and
    refuse it, as DataError "NAME:LINE: reason", unless it is well-formed UTF-8 XML (what
    pyoxigraph reads) with no external DTD, no external or parameter entity, no nesting deeper
    than :data:`MAX_XML_DEPTH`, and internal entities that expand to at most ten times the
    document plus :data:`XML_EXPANSION_SLACK`.

    The document is streamed: padding, a DOCTYPE after the first element, or a second DOCTYPE
    (which pyoxigraph would read) cannot hide anything. Entity references are counted on the raw
    bytes after the DOCTYPE before expat expands any of them."""
    from xml.parsers import expat

    start = stream.tell()
    size = stream.seek(0, 2) - start
    stream.seek(start)
    parser = expat.ParserCreate(encoding="UTF-8")  # pyoxigraph reads UTF-8 whatever the prolog says
    entities: dict[str, str] = {}
    depth = 0

    def refuse(message: str):
        raise _Refused(DataError(f"{name}:{parser.CurrentLineNumber}: {message}"))

    def doctype(_name, system_id, public_id, _internal):
        if system_id or public_id:
            keyword, literal = ("PUBLIC", public_id) if public_id else ("SYSTEM", system_id)
            refuse(f'external DTD ({keyword} "{literal}") refused: an RDF file may not reach outside itself')

    def entity(entity_name, is_parameter, value, _base, system_id, public_id, notation):
        if is_parameter:
            refuse(f"XML parameter entity '{entity_name}' refused")
        if value is None:
            keyword, literal = ("PUBLIC", public_id) if public_id else ("SYSTEM", system_id)
            refuse(f'external XML entity \'{entity_name}\' ({keyword} "{literal}") refused: an RDF file may not reach outside itself')
        entities.setdefault(entity_name, value)

    def end_doctype():
        if entities:
            position = stream.tell()
            _check_expansion(stream, start + parser.CurrentByteIndex, size, entities, name)
            stream.seek(position)

    def open_element(_name, _attributes):
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            refuse(f"elements nested more than {MAX_XML_DEPTH} deep")

    def close_element(_name):
        nonlocal depth
        depth -= 1

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.EndDoctypeDeclHandler = end_doctype
    parser.StartElementHandler = open_element
    parser.EndElementHandler = close_element
    try:
        while chunk := stream.read(_CHUNK):
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except _Refused as refused:
        raise refused.args[0] from None
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY] and not entities:
            reason += " (only &amp; &lt; &gt; &quot; &apos; and numeric references are predefined)"
        raise DataError(f"{name}:{exc.lineno}: not well-formed XML: {reason} (column {exc.offset + 1})") from None


def _check_expansion(stream, body_start: int, size: int, entities: dict[str, str], name: str) -> None:
    """Refuse the document when its entity references (counted on the raw bytes from
    ``body_start``: in comments and CDATA too, which only errs on the safe side) would expand
    beyond the limit."""
    sizes: dict[str, int] = {}

    def expanded(entity: str, trail: tuple = ()) -> int:
        if entity in trail:
            raise DataError(f"{name}: XML entity '{entity}' refers to itself")
        if entity not in sizes:
            value = entities[entity]
            sizes[entity] = len(value) + sum(expanded(ref, trail + (entity,)) - len(ref) - 2 for ref in _XML_REFERENCE.findall(value) if ref in entities)
        return sizes[entity]

    counts: dict[str, int] = {}
    keep = 2 + max(len(entity.encode("utf-8")) for entity in entities)  # the longest reference
    stream.seek(body_start)
    tail = b""
    while True:
        chunk = stream.read(_CHUNK)
        text = tail + chunk
        end = len(text) - keep if chunk else len(text)  # a reference starting later may be cut off: next time
        for match in _XML_REFERENCE_BYTES.finditer(text):
            if match.start() >= end:
                break
            reference = match.group(1).decode("utf-8", errors="replace")
            if reference in entities:
                counts[reference] = counts.get(reference, 0) + 1
        if not chunk:
            break
        tail = text[max(end, 0):]
    try:
        total = sum(expanded(reference) * count for reference, count in counts.items())
    except RecursionError:
        raise DataError(f"{name}: XML entities nested too deeply") from None
    limit = 10 * size + XML_EXPANSION_SLACK
    if total > limit:
        biggest = max(counts, key=expanded)
        raise DataError(f"{name}: XML entities would expand to {total:,} characters (entity '{biggest}' alone to {expanded(biggest):,}); refused above {limit:,}")


def _context_references(node):
    """Every context given by reference (a string) anywhere in a JSON-LD document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@context":
                for context in value if isinstance(value, list) else [value]:
                    if isinstance(context, str):
                        yield "@context", context
            elif key == "@import" and isinstance(value, str):
                yield "@import", value
            yield from _context_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _context_references(value)


# --- a guard for Python-level network access ----------------------------------------------------

_NETWORK_EVENTS = frozenset({
    "urllib.Request", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
    "socket.gethostbyaddr", "socket.sendto", "http.client.connect", "ftplib.connect",
})
_blocked = contextvars.ContextVar("lccore_kg_no_network", default=False)
_hook_installed = False


class NetworkRefused(ConfigError):
    """Something tried to open a connection while :func:`no_network` was active."""


def _audit(event: str, args) -> None:
    if event in _NETWORK_EVENTS and _blocked.get():
        target = args[0] if event == "urllib.Request" else (args[1] if event in ("socket.connect", "socket.sendto") else args[0])
        raise NetworkRefused(f"network access to {target} refused ({event}): {HINT}")


@contextlib.contextmanager
def no_network():
    """Within this block, this thread cannot reach the network through Python's socket or urllib
    (an audit hook, installed once per process and idle outside such blocks)."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    token = _blocked.set(True)
    try:
        yield
    finally:
        _blocked.reset(token)
