"""Knowledge graphs under hostile input (issue 15): a SPARQL time limit that really stops the
query, Ctrl-C during a query, entity bombs anywhere in an RDF/XML file, parse errors with their
line, full disks on import and export, and upper bounds on every option that costs time."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rdflib import Literal, URIRef

import lccore
import lccore_kg

EX = "http://example.org/"
RDF_NS = 'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/"'
# Three-way cross product with a filter no row passes: 2.7e10 combinations over 3,000 triples,
# hours of work for pyoxigraph and rdflib alike.
SLOW = 'SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?x . ?b ?q ?y . ?c ?r ?z . FILTER(STR(?x) = CONCAT(STR(?y), STR(?z), "!")) }'
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


def triples(count: int):
    return [(URIRef(f"{EX}s{i}"), URIRef(EX + "p"), Literal(f"value {i}")) for i in range(count)]


def count_of(result) -> int:
    return int(result["rows"][0]["n"])


def workers_of(pid: int) -> list[int]:
    """Live timed-query worker processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"lccore_kg.timed" in cmdline:
            found.append(int(entry.name))
    return found


def cli(*args, limit_memory: int | None = None, limit_file_size: int | None = None, timeout: float = 120):
    def limits():
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))
        if limit_file_size:
            # a write past the size fails with EFBIG, as a full disk fails with ENOSPC
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "lccore.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        preexec_fn=limits if (limit_memory or limit_file_size) else None,
    )


def one_line_error(result, status: int = 2, *fragments) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lccore: error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def oxigraph_dir(tmp_path) -> Path:
    """An Oxigraph store of 3,000 triples, closed (for the command line)."""
    path = tmp_path / "kg"
    store = lccore_kg.open_store(str(path))
    store.add(triples(3000))
    store.close()
    return path


# --- SPARQL with a time limit -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["oxigraph", "rdflib-memory"])
def test_a_timed_out_query_is_stopped_and_the_store_stays_usable(backend, tmp_path):
    store = lccore_kg.open_store(str(tmp_path / "kg") if backend == "oxigraph" else "memory")
    try:
        store.add(triples(3000))
        assert count_of(store.query(COUNT, timeout=60)) == 3000  # a worker answers as the store does
        [worker] = workers_of(os.getpid())  # kept warm for the next query
        started = time.monotonic()
        with pytest.raises(lccore.TimeLimitError, match=r"^query: stopped after 1 s \(the time limit\)"):
            store.query(SLOW, timeout=1)
        assert time.monotonic() - started < 30  # the limit, not the hours the query would take
        replacements = workers_of(os.getpid())
        assert worker not in replacements and len(replacements) <= 1  # killed, not left computing
        store.add(triples(3001)[-1:])
        assert count_of(store.query(COUNT, timeout=60)) == 3001  # a fresh worker sees the write
        assert count_of(store.query(COUNT)) == 3001
    finally:
        store.close()
    assert workers_of(os.getpid()) == []  # close() ends the warm ones


def test_timed_queries_check_the_limit_and_refuse_before_running():
    store = lccore_kg.open_store("memory")
    store.add(triples(3))
    for bad in (0, -1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(lccore.ConfigError, match="timeout: expected a positive, finite number of seconds"):
            store.query(COUNT, timeout=bad)
    with pytest.raises(lccore.ConfigError, match="SPARQL SERVICE <http://127.0.0.1:9/> refused"):
        store.query("SELECT * WHERE { SERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }", timeout=30)
    with pytest.raises(lccore.ConfigError, match="SPARQL syntax error"):
        store.query("SELECT WHERE {", timeout=30)
    assert workers_of(os.getpid()) == []  # nothing was started for them
    store.close()


def test_cli_query_timeout_exits_124_with_one_line(oxigraph_dir):
    started = time.monotonic()
    result = cli("kg", "query", oxigraph_dir, SLOW, "--timeout", "1")
    one_line_error(result, 124, "kg query: stopped after 1 s (the time limit")
    assert time.monotonic() - started < 60
    # the store is intact and free for the next command
    assert "3000" in cli("kg", "query", oxigraph_dir, COUNT).stdout
    for bad in ("0", "-5", "nan", "inf", "1e9", "soon"):
        one_line_error(cli("kg", "query", oxigraph_dir, COUNT, "--timeout", bad), 2, "--timeout")


SLOW_UPDATE = "DELETE { ?a ?p ?x } WHERE " + SLOW[SLOW.index("{"):]


@pytest.mark.parametrize("args", [[SLOW], [SLOW_UPDATE, "--update"]], ids=["query", "update"])
def test_ctrl_c_ends_a_long_query_or_update(oxigraph_dir, args):
    process = subprocess.Popen(
        [sys.executable, "-m", "lccore.cli", "kg", "query", str(oxigraph_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Wait until the command has the store open (its files among the process's descriptors):
        # from then on it is inside pyoxigraph.
        fds = Path(f"/proc/{process.pid}/fd")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if any(str(oxigraph_dir) in os.readlink(fd) for fd in fds.iterdir()):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        time.sleep(1.5)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert err.strip() == "lccore: interrupted"
    assert "3000" in cli("kg", "query", oxigraph_dir, COUNT).stdout  # an interrupted update changed nothing


# --- RDF/XML: the whole document is guarded -----------------------------------------------------


def laughs(levels: int = 10) -> str:
    """Entities lol0..lol{levels-1}, each ten of the one before: 3e9 characters at ten levels."""
    return '<!ENTITY lol0 "lol">\n' + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, levels))


def description(body: str, about: str = EX + "a") -> str:
    return f'<rdf:Description rdf:about="{about}"><ex:p>{body}</ex:p></rdf:Description>'


PADDING = "<!--" + "x" * (2 << 20) + "-->\n"  # 2 MiB: past a guard that reads the first MiB
BOMBS = {
    # padding before the DOCTYPE
    "padded.rdf": '<?xml version="1.0"?>\n' + PADDING + "<!DOCTYPE rdf:RDF [\n" + laughs() + "]>\n"
    + f"<rdf:RDF {RDF_NS}>{description('&lol9;')}</rdf:RDF>\n",
    # a DOCTYPE after the first element, which pyoxigraph reads all the same
    "inside.rdf": f'<?xml version="1.0"?>\n<rdf:RDF {RDF_NS}>\n<!DOCTYPE rdf:RDF [\n' + laughs() + "]>\n"
    + description("&lol9;") + "</rdf:RDF>\n",
    # a harmless DOCTYPE first, the bomb in a second one past the padding
    "second.rdf": '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [<!ENTITY ok "fine">]>\n' + PADDING + "<!DOCTYPE rdf:RDF [\n" + laughs() + "]>\n"
    + f"<rdf:RDF {RDF_NS}>{description('&ok;&lol9;')}</rdf:RDF>\n",
    # the bomb in an attribute value
    "attribute.rdf": '<?xml version="1.0"?>\n' + PADDING + "<!DOCTYPE rdf:RDF [\n" + laughs() + "]>\n"
    + f"<rdf:RDF {RDF_NS}>{description('x', about=EX + '&lol9;')}</rdf:RDF>\n",
    # no nesting: one 200,000-character entity referenced 20,000 times (4e9 characters)
    "quadratic.rdf": '<?xml version="1.0"?>\n' + PADDING + '<!DOCTYPE rdf:RDF [<!ENTITY big "' + "z" * 200_000 + '">]>\n'
    + f"<rdf:RDF {RDF_NS}>" + "".join(description("&big;", about=f"{EX}q{i}") for i in range(20_000)) + "</rdf:RDF>\n",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_entity_bombs_anywhere_in_rdf_xml_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text(BOMBS[name], encoding="utf-8")
    # Memory capped: without the guard pyoxigraph would expand gigabytes and abort.
    result = cli("kg", "import", "memory", path, limit_memory=3 << 30)
    line = one_line_error(result, 2, str(path))
    assert "XML entities would expand to" in line or "not well-formed XML" in line, line


def test_an_endpoint_answering_rdf_xml_gets_the_same_guard():
    bomb = ('<?xml version="1.0"?>\n' + PADDING + "<!DOCTYPE rdf:RDF [\n" + laughs() + "]>\n" + f"<rdf:RDF {RDF_NS}>{description('&lol9;')}</rdf:RDF>\n").encode()
    with endpoint_answering(bomb, "application/rdf+xml") as url:
        result = cli("kg", "query", url, "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", limit_memory=3 << 30)
    one_line_error(result, 2, f"SPARQL endpoint {url} answer: XML entities would expand to")


@contextlib.contextmanager
def endpoint_answering(body: bytes, content_type: str, *, length: bool = True):
    """The URL of a SPARQL endpoint on this machine that answers every query with ``body``
    (``length=False``: without a Content-Length, read to the end)."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/query"
    finally:
        server.shutdown()


def test_kg_query_reads_at_most_max_rows_and_says_so(tmp_path):
    data = tmp_path / "things.nt"
    data.write_text("".join(f"<{EX}t{i}> <{EX}n> \"{i}\" .\n" for i in range(30)), encoding="utf-8")
    store = tmp_path / "store"
    assert cli("kg", "import", store, data).returncode == 0
    result = cli("kg", "query", store, "--max-rows", 12, "SELECT ?s ?o WHERE { ?s ?p ?o }")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1 + 12
    assert "kg query: the first 12 rows of more; page with LIMIT and OFFSET, or raise --max-rows" in result.stderr
    result = cli("kg", "query", store, "--json", "SELECT ?s ?o WHERE { ?s ?p ?o }")  # written a binding at a time, one JSON document
    answer = json.loads(result.stdout)
    assert answer["head"] == {"vars": ["s", "o"]} and len(answer["results"]["bindings"]) == 30 and not result.stderr
    assert answer["results"]["bindings"][0]["s"]["type"] == "uri"
    assert json.loads(cli("kg", "query", store, "--json", "SELECT ?s WHERE { ?s ?p ?o } LIMIT 0").stdout)["results"]["bindings"] == []


def test_an_endpoint_answer_past_the_bound_is_refused(monkeypatch):
    from lccore_kg import sparql_endpoint

    answer = json.dumps({"head": {"vars": ["s"]}, "results": {"bindings": [{"s": {"type": "uri", "value": f"{EX}t{i}"}} for i in range(2000)]}}).encode()
    with endpoint_answering(answer, "application/sparql-results+json", length=False) as url:  # read until the bound
        store = lccore_kg.open_store(url)
        assert len(store.query("SELECT ?s WHERE { ?s ?p ?o }", max_rows=5)["rows"]) == 5
        monkeypatch.setattr(sparql_endpoint, "MAX_ANSWER_BYTES", 10_000)
        with pytest.raises(lccore.ConfigError, match=r"answered more than 10,000 bytes: add a LIMIT"):
            store.query("SELECT ?s WHERE { ?s ?p ?o }")


def test_a_large_file_goes_in_by_slices_and_a_malformed_one_writes_nothing(tmp_path, monkeypatch):
    from lccore_kg import oxigraph_store

    monkeypatch.setattr(oxigraph_store, "BULK_LOAD_FROM", 3)  # the bulk loader, a slice of 3 at a time
    good, bad = tmp_path / "good.nt", tmp_path / "bad.nt"
    good.write_text("".join(f"<{EX}t{i}> <{EX}n> \"{i}\" .\n" for i in range(10)), encoding="utf-8")
    bad.write_text("".join(f"<{EX}u{i}> <{EX}n> \"{i}\" .\n" for i in range(8)) + f"<{EX}u8> <{EX}n> \"8 .\n", encoding="utf-8")
    with lccore_kg.open_store(tmp_path / "store") as store:
        assert store.load(good) == 10 and len(store) == 10
        assert store.load(good) == 10 and len(store) == 10  # the same triples again: nothing new
        with pytest.raises(lccore.DataError, match=r"bad.nt:9: "):
            store.load(bad)
        assert len(store) == 10  # read whole before anything was written


def test_rdf_xml_errors_name_their_line(tmp_path):
    store = lccore_kg.open_store("memory")
    body = "".join(f'<rdf:Description rdf:about="{EX}n{i}">\n  <ex:p>v</ex:p>\n</rdf:Description>\n' for i in range(50))
    cases = {
        # an RDF error (a relative IRI) on line 153: pyoxigraph's RDF/XML parser gives no position
        "iri.rdf": (f'<?xml version="1.0"?>\n<rdf:RDF {RDF_NS}>\n{body}<rdf:Description rdf:about="x">\n<ex:p>v</ex:p></rdf:Description>\n</rdf:RDF>\n', "iri.rdf:153: "),
        "tags.rdf": (f'<?xml version="1.0"?>\n<rdf:RDF {RDF_NS}>\n{body}<rdf:Description rdf:about="{EX}b">\n<ex:p>v</ex:q>\n</rdf:Description></rdf:RDF>\n', "tags.rdf:154: not well-formed XML: mismatched tag"),
        "deep.rdf": (f'<?xml version="1.0"?>\n<rdf:RDF {RDF_NS}>\n<rdf:Description rdf:about="{EX}d">\n' + "<ex:p><rdf:Description>\n" * 3000 + "</rdf:Description></ex:p>\n" * 3000 + "</rdf:Description></rdf:RDF>\n", "deep.rdf:503: elements nested more than 1000 deep"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(lccore.DataError) as caught:
            store.load(path)
        assert str(caught.value).startswith(str(tmp_path / message)), str(caught.value)
        assert "\n" not in str(caught.value)
    assert len(store) == 0


def test_huge_terms_and_deep_json_ld_are_one_line_errors(tmp_path):
    store = lccore_kg.open_store("memory")
    big = tmp_path / "big.nt"
    big.write_text(f'<{EX}a> <{EX}p> "ok" .\n<{EX}a> <{EX}p> "' + "a" * (20 << 20) + '" .\n', encoding="utf-8")
    with pytest.raises(lccore.DataError, match=r"big\.nt:2: a term or line is too long to read"):
        store.load(big)
    deep = tmp_path / "deep.jsonld"
    deep.write_text('{"@id": "http://example.org/a", "http://example.org/p": ' + '{"http://example.org/p": ' * 100_000 + '"x"' + "}" * 100_001, encoding="utf-8")
    with pytest.raises(lccore.DataError, match=r"deep\.jsonld: JSON nested too deeply"):
        store.load(deep)
    assert len(store) == 0


# --- full disks ---------------------------------------------------------------------------------


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing_half_written(oxigraph_dir, tmp_path):
    one_line_error(cli("kg", "export", oxigraph_dir, "/dev/full", "--format", "nt"), 2, "/dev/full: cannot write: No space left on device")
    out = tmp_path / "out" / "backup.nt"
    out.parent.mkdir()
    # a write that fails midway (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC)
    one_line_error(cli("kg", "export", oxigraph_dir, out, limit_file_size=20_000), 2, f"{out}: cannot write")
    assert list(out.parent.iterdir()) == []  # lccore's partial file is gone
    out.write_text("the user's previous backup\n", encoding="utf-8")
    one_line_error(cli("kg", "export", oxigraph_dir, out, limit_file_size=20_000), 2, f"{out}: cannot write")
    assert out.read_text(encoding="utf-8") == "the user's previous backup\n"  # untouched until a full copy exists
    assert sorted(p.name for p in out.parent.iterdir()) == ["backup.nt"]
    assert cli("kg", "export", oxigraph_dir, out).returncode == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3000


def test_import_to_a_full_disk_is_one_line(tmp_path):
    data = tmp_path / "data.nt"
    data.write_text("".join(f'<{EX}s{i}> <{EX}p> "{"v" * 60} {i}" .\n' for i in range(30_000)), encoding="utf-8")
    new_store = tmp_path / "new-kg"
    one_line_error(cli("kg", "import", new_store, data, limit_file_size=100_000), 2, f"{new_store}: cannot write the store")
    assert not new_store.exists()  # lccore made it for this import, which wrote nothing
    small = tmp_path / "small.nt"
    small.write_text(f'<{EX}a> <{EX}p> "kept" .\n', encoding="utf-8")
    # a disk too full even to create the store
    one_line_error(cli("kg", "import", new_store, small, limit_file_size=2_000), 2, f"{new_store}: cannot open the Oxigraph store")
    assert not new_store.exists()
    kept = tmp_path / "kg"
    assert cli("kg", "import", kept, small).returncode == 0
    one_line_error(cli("kg", "import", kept, data, limit_file_size=100_000), 2, f"{kept}: cannot write the store")
    result = cli("kg", "query", kept, COUNT, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"]["bindings"][0]["n"]["value"] == "1"  # the store as it was


# --- bounds on every option that costs time or memory -------------------------------------------


def test_kg_options_have_upper_bounds(tmp_path):
    store = lccore_kg.open_store("memory")
    store.add(triples(3))
    for kwargs, key in (({"hops": 11}, "neighbours: hops"), ({"hops": -1}, "neighbours: hops"), ({"limit": 0}, "neighbours: limit"), ({"limit": 10**7}, "neighbours: limit")):
        with pytest.raises(lccore.ConfigError, match=key):
            store.neighbours(EX + "s0", **kwargs)
    with pytest.raises(lccore.ConfigError, match="lookup: limit"):
        store.lookup("x", limit=10**6)
    engine = lccore.Engine()
    for options, key in (({"max_triples": 10**6}, "max_triples"), ({"max_new_tokens": 10**7}, "max_new_tokens")):
        with pytest.raises(lccore.ConfigError, match=f"kg ask.{key}: must be at most"):
            engine.create("reasoner", "kg_qa", options, key="kg ask")
    with pytest.raises(lccore.ConfigError, match=r"store.timeout: must be at most"):
        engine.create("kg_backend", "sparql-endpoint", {"query_url": "http://127.0.0.1:9/query", "timeout": 1e9}, key="store")
    reasoner = engine.create("reasoner", "kg_qa", {}, key="kg ask")
    with pytest.raises(lccore.ConfigError, match="kg_qa: question: expected a string of 1 to 4,096 characters, got 20,000 characters"):
        reasoner.answer("who " * 5000, graph=store)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"Alice lives in Paris."\n', encoding="utf-8")
    # refused before the (here missing) runs are loaded
    for flag, value in (("--batch-size", "0"), ("--batch-size", "100000"), ("--min-confidence", "1.5"), ("--min-confidence", "nan"), ("--base", "not an iri")):
        result = cli("kg", "build", "--ner", tmp_path / "no-ner", "--re", tmp_path / "no-re", "--input", docs, "--store", "memory", flag, value)
        one_line_error(result, 2, f"kg build: {flag}: expected")
