"""Knowledge-graph stores: one behaviour contract for the three backends, persistence across
processes, and the network rules (SPARQL, JSON-LD contexts, XML entities)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, RDFS

import lccore
import lccore_kg
from lccore_kg import safety

EX = "http://example.org/"
ALICE, BOB, CAROL, PARIS, FRANCE = (URIRef(EX + n) for n in ("alice", "bob", "carol", "paris", "france"))
XSD_INTEGER, XSD_DOUBLE = (URIRef("http://www.w3.org/2001/XMLSchema#" + n) for n in ("integer", "double"))
PERSON, CITY, KNOWS, LIVES_IN, IN = (URIRef(EX + n) for n in ("Person", "City", "knows", "livesIn", "in"))

SAMPLE_TTL = """\
@prefix ex: <http://example.org/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
ex:alice a ex:Person ; rdfs:label "Alice"@en ; ex:knows ex:bob ; ex:age 42 .
ex:bob a ex:Person ; rdfs:label "Bob" ; ex:livesIn ex:paris ; ex:note [ rdfs:label "a blank node" ] .
ex:carol a ex:Person ; rdfs:label "Carol" .
ex:paris a ex:City ; rdfs:label "Paris" ; ex:in ex:france ; ex:population 2.1e6 .
ex:france rdfs:label "France" .
"""
SAMPLE_TRIPLES = 16


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lccore.cli", *args], capture_output=True, text=True, input=stdin, timeout=120)


def assert_refused(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lccore: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- the backends -------------------------------------------------------------------------------


def oxigraph_binary() -> str | None:
    beside = Path(sys.executable).parent / "oxigraph"
    return str(beside) if beside.exists() else shutil.which("oxigraph")


@pytest.fixture(scope="session")
def oxigraph_server():
    """`oxigraph serve` (in memory) on 127.0.0.1 and a free port, for the sparql-endpoint backend."""
    binary = oxigraph_binary()
    if binary is None:
        pytest.skip("the `oxigraph` server binary is not installed (pip install 'lccore[kg]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "serve", "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/query?query=ASK%7B%7D", timeout=1).read()
            break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"oxigraph serve did not start: {process.stderr.read().decode(errors='replace')[-500:]}")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def engine():
    return lccore.Engine(entry_points=False, plugins=[lccore_kg])


BACKENDS = ["rdflib-memory", "oxigraph", "sparql-endpoint"]


@pytest.fixture
def make_store(request, engine, tmp_path):
    """A function that opens a new, empty store of the backend under test."""
    opened = []

    def make(backend: str):
        if backend == "oxigraph":
            store = engine.create("kg_backend", "oxigraph", {"path": str(tmp_path / f"store{len(opened)}")})
        elif backend == "sparql-endpoint":
            url = request.getfixturevalue("oxigraph_server")
            store = engine.create("kg_backend", "sparql-endpoint", {"query_url": f"{url}/query", "update_url": f"{url}/update"})
            store.update("DROP ALL")
        else:
            store = engine.create("kg_backend", backend, {})
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request, make_store):
    return make_store(request.param)


@pytest.fixture
def sample(store, tmp_path):
    path = tmp_path / "sample.ttl"
    path.write_text(SAMPLE_TTL, encoding="utf-8")
    assert store.load(path) == SAMPLE_TRIPLES
    return store


def triples_of(store) -> set:
    return set(store.query("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }")["triples"])


# --- the contract, for every backend ------------------------------------------------------------


def test_max_rows_bounds_a_result_and_says_it_was_cut(sample):
    everything = sample.query("SELECT ?s ?p ?o WHERE { ?s ?p ?o }")
    assert len(everything["rows"]) == SAMPLE_TRIPLES and not everything.get("truncated")
    for timeout in (None, 30):  # in this process, and in the worker a time limit runs it in
        cut = sample.query("SELECT ?s ?p ?o WHERE { ?s ?p ?o }", max_rows=3, timeout=timeout)
        assert len(cut["rows"]) == 3 and cut["truncated"] is True
        assert set(map(tuple, (r.values() for r in cut["rows"]))) <= set(map(tuple, (r.values() for r in everything["rows"])))
    exact = sample.query("SELECT ?s ?p ?o WHERE { ?s ?p ?o }", max_rows=SAMPLE_TRIPLES)
    assert len(exact["rows"]) == SAMPLE_TRIPLES and exact["truncated"] is False  # all there: nothing said
    graph = sample.query("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", max_rows=2)
    assert len(graph["triples"]) == 2 and graph["truncated"] is True
    with pytest.raises(lccore.ConfigError, match="max_rows"):
        sample.query("ASK { ?s ?p ?o }", max_rows=0)


def test_add_is_idempotent_and_records_provenance(store):
    triples = [(ALICE, KNOWS, BOB), (BOB, LIVES_IN, PARIS)]
    source = {"source": "news.txt", "sentence": "Alice knows Bob, who lives in Paris.", "start": 0, "end": 36, "model": "re-v1", "confidence": 0.92}
    assert store.add(triples, provenance=source) == 2
    size = len(store)
    assert size == 2 + 2 * (4 + 6)  # two triples, each with one rdf:Statement of 4 + 6 properties
    assert store.add(triples, provenance=source) == 0  # the same extraction again adds nothing
    assert store.add([(ALICE, KNOWS, BOB), (ALICE, KNOWS, BOB)]) == 0
    assert len(store) == size

    rows = store.query(
        "PREFIX lc: <https://w3id.org/lccore/vocab#> PREFIX rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> "
        "SELECT ?st ?start ?confidence ?sentence WHERE { ?st a rdf:Statement ; rdf:subject <http://example.org/alice> ; "
        "rdf:predicate <http://example.org/knows> ; rdf:object <http://example.org/bob> ; lc:start ?start ; lc:confidence ?confidence ; lc:sentence ?sentence }"
    )["rows"]
    assert len(rows) == 1
    assert re.fullmatch(r"urn:lccore:statement:[0-9a-f]{32}", str(rows[0]["st"]))
    assert rows[0]["start"] == Literal(0) and rows[0]["start"].datatype == XSD_INTEGER
    assert rows[0]["confidence"].datatype == XSD_DOUBLE and float(rows[0]["confidence"]) == 0.92
    assert rows[0]["sentence"] == Literal(source["sentence"])

    # the same triple from another sentence: not new, but a second statement
    assert store.add([(ALICE, KNOWS, BOB)], provenance={**source, "sentence": "Bob is Alice's friend."}) == 0
    assert len(store) == size + 10
    # one provenance record per triple
    assert store.add([(CAROL, KNOWS, ALICE), (CAROL, KNOWS, BOB)], provenance=[{"source": "a.txt"}, {"source": "b.txt"}]) == 2
    assert store.query("ASK { ?st <https://w3id.org/lccore/vocab#source> \"b.txt\" ; <http://www.w3.org/1999/02/22-rdf-syntax-ns#object> <http://example.org/bob> }")["value"]


def test_statement_iri_is_stable_and_depends_on_the_provenance():
    statement_iri = lccore_kg.statement_iri
    triple = (ALICE, KNOWS, BOB)
    one = statement_iri(triple, [("source", Literal("a.txt"))])
    assert one == statement_iri(triple, [("source", Literal("a.txt"))])
    assert one != statement_iri(triple, [("source", Literal("b.txt"))])
    assert one != statement_iri((ALICE, KNOWS, CAROL), [("source", Literal("a.txt"))])


@pytest.mark.parametrize(
    "bad, message",
    [
        ((URIRef("http://example.org/a b"), KNOWS, BOB), "triple 2: invalid subject"),
        ((Literal("Alice"), KNOWS, BOB), "triple 2: subject must be an rdflib URIRef or BNode"),
        ((ALICE, "knows", BOB), "triple 2: predicate must be an rdflib URIRef"),
        ((ALICE, KNOWS), "triple 2: expected a (subject, predicate, object) tuple"),
    ],
)
def test_add_is_all_or_none(store, bad, message):
    with pytest.raises(lccore.DataError, match=re.escape(message)):
        store.add([(ALICE, KNOWS, BOB), bad, (BOB, KNOWS, CAROL)], provenance={"source": "x"})
    assert len(store) == 0
    with pytest.raises(lccore.DataError, match="provenance key 'bad key'"):
        store.add([(ALICE, KNOWS, BOB)], provenance={"bad key": 1})
    assert len(store) == 0


def test_select_ask_construct(sample):
    select = sample.query("PREFIX ex: <http://example.org/> SELECT ?who ?age WHERE { ?who a ex:Person OPTIONAL { ?who ex:age ?age } } ORDER BY ?who")
    assert select["type"] == "select" and select["vars"] == ["who", "age"]
    assert select["rows"] == [{"who": ALICE, "age": Literal(42)}, {"who": BOB}, {"who": CAROL}]
    count = sample.query("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }")["rows"]
    assert int(count[0]["n"]) == SAMPLE_TRIPLES == len(sample)
    assert sample.query("ASK { <http://example.org/alice> <http://example.org/knows> <http://example.org/bob> }") == {"type": "ask", "value": True}
    assert sample.query("ASK { <http://example.org/bob> <http://example.org/knows> <http://example.org/alice> }")["value"] is False
    graph = sample.query("PREFIX ex: <http://example.org/> CONSTRUCT { ?b ex:knownBy ?a } WHERE { ?a ex:knows ?b }")
    assert graph == {"type": "graph", "triples": [(BOB, URIRef(EX + "knownBy"), ALICE)]}
    # rdf, rdfs, owl, xsd and lc are predeclared on every backend
    labels = sample.query("SELECT ?l WHERE { <http://example.org/alice> rdfs:label ?l }")["rows"]
    assert labels == [{"l": Literal("Alice", lang="en")}]

    sample.update("PREFIX ex: <http://example.org/> INSERT DATA { ex:carol ex:knows ex:alice }")
    assert sample.query("ASK { <http://example.org/carol> <http://example.org/knows> <http://example.org/alice> }")["value"]


def test_lookup_by_label_ignores_case(sample):
    assert sample.lookup("alice") == [{"iri": str(ALICE), "label": "Alice", "types": [str(PERSON)]}]
    assert sample.lookup("PARIS") == [{"iri": str(PARIS), "label": "Paris", "types": [str(CITY)]}]
    assert sample.lookup("France")[0]["types"] == []
    assert sample.lookup("Ali") == []  # exact match only
    assert sample.lookup("a blank node") == []  # entities are IRIs
    # the label index of the local stores follows every write
    sample.add([(URIRef(EX + "alicia"), RDFS.label, Literal("alice"))])
    assert sorted(hit["iri"] for hit in sample.lookup("Alice")) == [str(ALICE), EX + "alicia"]
    sample.update('DELETE DATA { <http://example.org/alicia> rdfs:label "alice" }')
    assert len(sample.lookup("Alice")) == 1


def test_neighbours_by_hops(sample):
    sample.add([(BOB, KNOWS, CAROL)], provenance={"source": "s.txt"})
    one = set(sample.neighbours(str(BOB), hops=1))
    assert (ALICE, KNOWS, BOB) in one and (BOB, LIVES_IN, PARIS) in one and (BOB, RDF.type, PERSON) in one
    assert (PARIS, IN, FRANCE) not in one
    assert not any(str(s).startswith("urn:lccore:statement:") or str(o).startswith("urn:lccore:statement:") for s, _, o in one)
    two = sample.neighbours(str(BOB), hops=2)
    assert (PARIS, IN, FRANCE) in two and (ALICE, RDFS.label, Literal("Alice", lang="en")) in two
    assert (FRANCE, RDFS.label, Literal("France")) not in two
    assert set(two[: len(one)]) == one  # nearest first
    # a class reached through rdf:type is not expanded into all its members
    assert (CAROL, RDF.type, PERSON) not in sample.neighbours(str(ALICE), hops=2)
    assert len(sample.neighbours(str(BOB), hops=3, limit=5)) == 5
    assert sample.neighbours(EX + "nobody", hops=2) == []


FORMATS = ["ttl", "nt", "jsonld", "rdf", "nq", "trig"]


@pytest.mark.parametrize("extension", FORMATS)
def test_load_dump_round_trip(sample, make_store, tmp_path, extension):
    sample.add([(ALICE, KNOWS, CAROL)], provenance={"source": "doc.txt", "confidence": 0.5})
    path = tmp_path / f"out.{extension}"
    sample.dump(path)
    again = make_store("rdflib-memory")
    assert again.load(path) == len(sample)
    original, copy = Graph(), Graph()
    for triple in triples_of(sample):
        original.add(triple)
    for triple in triples_of(again):
        copy.add(triple)
    assert isomorphic(original, copy)


def test_store_spec_and_options(engine, tmp_path):
    assert lccore_kg.store_spec("memory") == ("rdflib-memory", {})
    assert lccore_kg.store_spec("http://h:7878/query") == ("sparql-endpoint", {"query_url": "http://h:7878/query", "update_url": "http://h:7878/update"})
    assert lccore_kg.store_spec("https://h/ds/sparql")[1]["update_url"] == "https://h/ds/sparql"
    assert lccore_kg.store_spec(str(tmp_path / "kg")) == ("oxigraph", {"path": str(tmp_path / "kg")})
    with pytest.raises(lccore.ConfigError, match="no such store"):
        lccore_kg.open_store(tmp_path / "missing", write=False, engine=engine)
    (tmp_path / "not-a-store").mkdir()
    (tmp_path / "not-a-store" / "notes.txt").write_text("mine")
    with pytest.raises(lccore.ConfigError, match="not an Oxigraph store"):
        lccore_kg.open_store(tmp_path / "not-a-store", engine=engine)
    with pytest.raises(lccore.ConfigError, match=r"store\.path: missing required key"):
        engine.create("kg_backend", "oxigraph", {}, key="store")
    with pytest.raises(lccore.ConfigError, match=r"store\.acess: unknown key \(did you mean 'access'\?\)"):
        engine.create("kg_backend", "oxigraph", {"path": str(tmp_path / "x"), "acess": "auto"}, key="store")
    assert {"oxigraph", "rdflib-memory", "sparql-endpoint"} <= set(lccore.Engine().names("kg_backend"))
    with lccore_kg.open_store({"backend": "oxigraph", "path": str(tmp_path / "kg")}, engine=engine) as store:
        store.add([(ALICE, KNOWS, BOB)])
    with lccore_kg.open_store(tmp_path / "kg", write=False, engine=engine) as store:  # reopened after close
        assert len(store) == 1


def test_rdfs_inference_copies_into_memory(sample):
    sample.add([(PERSON, RDFS.subClassOf, URIRef(EX + "Agent"))])
    query = "SELECT ?x WHERE { ?x a <http://example.org/Agent> } ORDER BY ?x"
    assert sample.query(query)["rows"] == []
    inferred = lccore_kg.infer_rdfs(sample)
    assert [row["x"] for row in inferred.query(query)["rows"]] == [ALICE, BOB, CAROL]
    assert len(sample) == SAMPLE_TRIPLES + 1  # the store itself is untouched


# --- network rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sparql, message",
    [
        ("SELECT * WHERE { SERVICE <http://dbpedia.org/sparql> { ?s ?p ?o } }", "SPARQL SERVICE <http://dbpedia.org/sparql> refused"),
        ("SELECT * WHERE { ?x ?y ?z SERVICE SILENT ?endpoint { ?s ?p ?o } }", "SPARQL SERVICE ?endpoint refused"),
        ("SELECT * FROM <https://example.org/data.ttl> WHERE { ?s ?p ?o }", "SPARQL FROM <https://example.org/data.ttl> refused"),
        ("PREFIX w: <ftp://files.example.org/> SELECT * FROM NAMED w:g WHERE { GRAPH ?g { ?s ?p ?o } }", "SPARQL FROM NAMED <ftp://files.example.org/g> refused"),
    ],
)
def test_network_queries_are_refused_before_the_store(store, sparql, message):
    with pytest.raises(lccore.ConfigError, match=re.escape(message) + r": network access is off \(pass --allow-network\)"):
        store.query(sparql)


@pytest.mark.parametrize(
    "sparql, message",
    [
        ("LOAD <http://example.org/data.ttl>", "SPARQL LOAD <http://example.org/data.ttl> refused"),
        ("LOAD <file:///etc/passwd> INTO GRAPH <urn:g>", "SPARQL LOAD <file:///etc/passwd> refused"),
        ("INSERT { ?s ?p ?o } USING <http://example.org/g> WHERE { ?s ?p ?o }", "SPARQL USING <http://example.org/g> refused"),
        ("DELETE { ?s ?p ?o } WHERE { SERVICE <http://x.org/sparql> { ?s ?p ?o } }", "SPARQL SERVICE <http://x.org/sparql> refused"),
    ],
)
def test_network_updates_are_refused(store, sparql, message):
    store.add([(ALICE, KNOWS, BOB)])
    with pytest.raises(lccore.ConfigError, match=re.escape(message)):
        store.update(sparql)
    assert len(store) == 1


def test_local_dataset_clauses_and_allow_network_pass_the_check():
    assert safety.check_query("SELECT * FROM <urn:lccore:graph> WHERE { ?s ?p ?o }") == "select"
    assert safety.check_query("SELECT * WHERE { SERVICE <http://x.org/sparql> { ?s ?p ?o } }", allow_network=True) == "select"
    safety.check_update("LOAD <http://example.org/d.ttl>", allow_network=True)


def test_sparql_syntax_errors_name_line_and_column(store):
    with pytest.raises(lccore.ConfigError, match=r"SPARQL syntax error at line 2, column \d+"):
        store.query("SELECT ?s\nWHERE { ?s ?p }")
    with pytest.raises(lccore.ConfigError, match="this is a SPARQL update, not a query"):
        store.query("INSERT DATA { <http://example.org/a> <http://example.org/b> <http://example.org/c> }")
    with pytest.raises(lccore.ConfigError, match="this is a SPARQL query, not an update"):
        store.update("SELECT * WHERE { ?s ?p ?o }")


def test_no_network_guard_blocks_python_connections():
    with safety.no_network():
        with pytest.raises(safety.NetworkRefused, match="network access to http://127.0.0.1:9/x refused"):
            urllib.request.urlopen("http://127.0.0.1:9/x", timeout=1)
        with pytest.raises(safety.NetworkRefused):
            socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(urllib.error.URLError):  # outside the block: a real (refused) connection attempt
        urllib.request.urlopen("http://127.0.0.1:9/x", timeout=1)


# Ten levels of ten references: 3e9 characters once expanded (pyoxigraph would try, and abort).
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [\n<!ENTITY lol0 "lol">\n'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    + ']>\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">'
    '<rdf:Description rdf:about="http://example.org/a"><ex:p>&lol9;</ex:p></rdf:Description></rdf:RDF>\n'
)
XXE = """<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
  <!ENTITY secret SYSTEM "{target}">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">
  <rdf:Description rdf:about="http://example.org/a"><ex:p>&secret;</ex:p></rdf:Description>
</rdf:RDF>
"""


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("remote.jsonld", {"@context": "http://127.0.0.1:9/context.jsonld", "@id": "http://example.org/a", "name": "A"}, "JSON-LD @context 'http://127.0.0.1:9/context.jsonld' refused: network access is off"),
        ("import.jsonld", {"@graph": [{"@context": {"@import": "https://schema.org/"}, "@id": "http://example.org/a"}]}, "JSON-LD @import 'https://schema.org/' refused"),
        ("local.jsonld", {"@context": ["context.jsonld"], "@id": "http://example.org/a"}, "JSON-LD @context 'context.jsonld' refused: only inline contexts are read"),
        ("file.rdf", XXE.format(target="file:///etc/passwd"), "file.rdf:3: external XML entity 'secret' (SYSTEM \"file:///etc/passwd\") refused"),
        ("http.rdf", XXE.format(target="http://127.0.0.1:9/x"), "http.rdf:3: external XML entity 'secret' (SYSTEM \"http://127.0.0.1:9/x\") refused"),
        ("dtd.xml", '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF SYSTEM "http://127.0.0.1:9/rdf.dtd">\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>\n', "dtd.xml:2: external DTD (SYSTEM \"http://127.0.0.1:9/rdf.dtd\") refused"),
        ("laughs.rdf", BILLION_LAUGHS, "laughs.rdf: XML entities would expand to 3,000,000,000 characters (entity 'lol9' alone to 3,000,000,000); refused"),
        ("quadratic.rdf", XXE.replace('SYSTEM "{target}"', '"' + "x" * 100_000 + '"').replace("&secret;", "&secret;" * 2000), "quadratic.rdf: XML entities would expand to 200,000,000 characters"),
        ("parameter.rdf", XXE.replace('<!ENTITY secret SYSTEM "{target}">', '<!ENTITY % p "x">'), "parameter.rdf:3: XML parameter entity 'p' refused"),
    ],
)
def test_files_that_reach_outside_are_refused(store, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(json.dumps(content) if isinstance(content, dict) else content, encoding="utf-8")
    with pytest.raises(lccore.DataError, match=re.escape(message)):
        store.load(path)
    assert len(store) == 0


OWL_WITH_ENTITIES = """<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
  <!ENTITY owl "http://www.w3.org/2002/07/owl#">
  <!ENTITY ex "http://example.org/">
  <!ENTITY person "&ex;Person">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="&person;"><rdf:type rdf:resource="&owl;Class"/></rdf:Description>
</rdf:RDF>
"""


def test_internal_entities_and_owl_imports_are_plain_data(store, tmp_path):
    xml = tmp_path / "internal.rdf"
    xml.write_text(XXE.replace('SYSTEM "{target}"', '"inline text"'), encoding="utf-8")
    owl = tmp_path / "ontology.owl"
    owl.write_text(OWL_WITH_ENTITIES, encoding="utf-8")
    assert store.load(owl) == 1 and store.query("ASK { <http://example.org/Person> a owl:Class }")["value"]
    ontology = tmp_path / "onto.ttl"
    ontology.write_text("<http://example.org/onto> <http://www.w3.org/2002/07/owl#imports> <http://127.0.0.1:9/other.ttl> .\n", encoding="utf-8")
    # nothing is fetched: owl:imports is just a triple (the endpoint backend itself talks HTTP)
    with contextlib.nullcontext() if store.name == "sparql-endpoint" else safety.no_network():
        assert store.load(xml) == 1
        assert store.load(ontology) == 1
        lccore_kg.infer_rdfs(store)
    assert len(store) == 3
    assert store.query('ASK { <http://example.org/a> <http://example.org/p> "inline text" }')["value"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.ttl", '@prefix ex: <http://example.org/> .\nex:a ex:p ex:b .\nex:a ex:p "unterminated .\n', "bad.ttl:3: "),
        ("bad.ttl", "@prefix ex: <http://example.org/> .\nex:a ex:p ex:b .\nex:a ex:p ex:c\nex:d ex:p ex:c .\n", "bad.ttl:4: A dot is expected at the end of statements (column 1)"),
        ("bad.nt", "<http://example.org/a> <http://example.org/p> <http://example.org/b> .\n<http://example.org/a> <http://example.org/p> <http://example.org/ b> .\n", "bad.nt:2: Invalid IRI code point ' '"),
        ("bad.jsonld", '{"@id": "http://example.org/a",\n "http://example.org/p": [}', "bad.jsonld:2: malformed JSON"),
        ("relative.ttl", '<a> <http://example.org/p> "x" .\n', "relative.ttl:1: No scheme found in an absolute IRI (a relative IRI: pass --base IRI)"),
        ("data.csv", "a,b\n", "data.csv: unknown RDF file type '.csv'"),
    ],
)
def test_malformed_files_name_file_and_line(store, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(lccore.DataError, match=re.escape(message)):
        store.load(path)
    assert len(store) == 0  # a file is one transaction


# --- the command line ---------------------------------------------------------------------------


def test_cli_persists_across_processes_and_reads_while_a_writer_holds_the_store(tmp_path):
    data = tmp_path / "sample.ttl"
    data.write_text(SAMPLE_TTL, encoding="utf-8")
    store = tmp_path / "kg"
    result = run_cli("kg", "import", str(store), str(data))
    assert result.returncode == 0, result.stderr
    assert f"{data}: {SAMPLE_TRIPLES} triples read" in result.stdout

    query = "PREFIX ex: <http://example.org/> SELECT ?who ?name WHERE { ?who a ex:Person ; rdfs:label ?name } ORDER BY ?who"
    result = run_cli("kg", "query", str(store), query, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["head"]["vars"] == ["who", "name"]
    assert [b["who"]["value"] for b in answer["results"]["bindings"]] == [str(ALICE), str(BOB), str(CAROL)]
    assert answer["results"]["bindings"][0]["name"] == {"type": "literal", "value": "Alice", "xml:lang": "en"}

    table = run_cli("kg", "query", str(store), query).stdout.splitlines()
    assert table[0].split() == ["who", "name"]
    assert table[1].split() == ["ex:alice", '"Alice"@en']

    # A long-lived writer holds the store read-write; a query in another process still reads it.
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, lccore_kg\n"
            "from rdflib import URIRef\n"
            f"store = lccore_kg.open_store({str(store)!r})\n"
            "store.add([(URIRef('http://example.org/dave'), URIRef('http://example.org/knows'), URIRef('http://example.org/alice'))], provenance={'source': 'live'})\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "store.close()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        result = run_cli("kg", "query", str(store), "ASK { <http://example.org/dave> <http://example.org/knows> ?x }")
        assert (result.returncode, result.stdout.strip()) == (0, "true"), result.stderr
        assert_refused(run_cli("kg", "import", str(store), str(data)), "the store is open read-write in another process")
    finally:
        writer.communicate("\n", timeout=60)
    stats = json.loads(run_cli("kg", "stats", str(store), "--json").stdout)
    assert stats["provenance_statements"] == 1 and stats["classes"] == 3  # ex:Person, ex:City, rdf:Statement
    assert stats["triples"] == SAMPLE_TRIPLES + 1 + 5


def test_cli_refusals_exit_2_with_one_line(tmp_path):
    store = tmp_path / "kg"
    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix ex: <http://example.org/> .\nex:a ex:p .\n", encoding="utf-8")
    assert_refused(run_cli("kg", "import", str(store), str(bad)), "bad.ttl:2:")
    remote = tmp_path / "remote.jsonld"
    remote.write_text(json.dumps({"@context": "https://schema.org/", "name": "x"}), encoding="utf-8")
    assert_refused(run_cli("kg", "import", str(store), str(remote)), "JSON-LD @context 'https://schema.org/' refused")
    assert_refused(
        run_cli("kg", "query", str(store), "SELECT * WHERE { SERVICE <http://dbpedia.org/sparql> { ?s ?p ?o } }"),
        "SPARQL SERVICE <http://dbpedia.org/sparql> refused: network access is off (pass --allow-network)",
    )
    assert_refused(run_cli("kg", "query", str(store), "LOAD <http://example.org/x.ttl>", "--update"), "SPARQL LOAD <http://example.org/x.ttl> refused")
    assert_refused(run_cli("kg", "query", "memory", "SELECT * FROM <http://example.org/g> WHERE { ?s ?p ?o }"), "SPARQL FROM <http://example.org/g> refused")
    assert_refused(run_cli("kg", "query", str(tmp_path / "none"), "ASK {}"), "no such store")


def test_cli_infer_export_and_update(tmp_path):
    data = tmp_path / "sample.ttl"
    data.write_text(SAMPLE_TTL + "ex:Person rdfs:subClassOf ex:Agent .\n", encoding="utf-8")
    store = str(tmp_path / "kg")
    assert run_cli("kg", "import", store, str(data)).returncode == 0
    query = "SELECT ?x WHERE { ?x a <http://example.org/Agent> } ORDER BY ?x"
    assert run_cli("kg", "query", store, query).stdout.split() == ["x"]
    assert run_cli("kg", "query", store, query, "--infer", "rdfs").stdout.split() == ["x", "<http://example.org/alice>", "<http://example.org/bob>", "<http://example.org/carol>"]
    result = run_cli("kg", "query", store, "--update", "-", stdin="INSERT DATA { <http://example.org/x> <http://example.org/p> 1 }")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.nt"
    assert run_cli("kg", "export", store, str(out)).returncode == 0
    assert len(out.read_text().splitlines()) == SAMPLE_TRIPLES + 2
    stats = run_cli("kg", "stats", store).stdout
    assert re.search(rf"^triples\s+{SAMPLE_TRIPLES + 2}$", stats, flags=re.M) and "top predicates:" in stats and "rdfs:label" in stats


def test_oxigraph_bulk_loads_a_large_file(engine, tmp_path, monkeypatch):
    from lccore_kg import oxigraph_store

    monkeypatch.setattr(oxigraph_store, "BULK_LOAD_FROM", 10)  # the bulk-loader path, on a small file
    data = tmp_path / "sample.ttl"
    data.write_text(SAMPLE_TTL, encoding="utf-8")
    with engine.create("kg_backend", "oxigraph", {"path": str(tmp_path / "kg")}) as store:
        assert store.load(data) == SAMPLE_TRIPLES
        assert store.load(data) == SAMPLE_TRIPLES and len(store) == SAMPLE_TRIPLES + 2  # the blank node (2 triples) is new each time
        assert store.lookup("carol")[0]["types"] == [str(PERSON)]


def test_results_json_is_standard_sparql_json_and_json_ld_from_kernel_and_stores():
    from rdflib import BNode

    kernel = lccore.KGBackend()  # the contract's own serialiser (rdflib): what any store inherits
    select = {"type": "select", "vars": ["s", "n"], "rows": [
        {"s": URIRef(EX + "a"), "n": Literal("Ada", lang="en")},
        {"s": BNode("b1"), "n": Literal("3", datatype=URIRef("http://www.w3.org/2001/XMLSchema#integer"))},
    ]}
    assert kernel.results_json(select) == {"head": {"vars": ["s", "n"]}, "results": {"bindings": [
        {"s": {"type": "uri", "value": EX + "a"}, "n": {"type": "literal", "value": "Ada", "xml:lang": "en"}},
        {"s": {"type": "bnode", "value": "b1"}, "n": {"type": "literal", "value": "3", "datatype": "http://www.w3.org/2001/XMLSchema#integer"}},
    ]}}
    assert kernel.results_json({"type": "ask", "value": True}) == {"head": {}, "boolean": True}
    graph = {"type": "graph", "triples": [(URIRef(EX + "a"), URIRef(EX + "name"), Literal("Ada"))]}
    assert kernel.results_json(graph) == [{"@id": EX + "a", EX + "name": [{"@value": "Ada"}]}]
    with lccore_kg.open_store("memory") as store:  # the kg plugin's stores: Oxigraph's serialiser, the same data
        assert store.results_json(select) == kernel.results_json(select)
        assert Graph().parse(data=json.dumps(store.results_json(graph)), format="json-ld").isomorphic(Graph().parse(data=json.dumps(kernel.results_json(graph)), format="json-ld"))
