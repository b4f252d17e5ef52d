"""A knowledge graph from text (NER -> relation extraction -> triples with provenance) and the
kg_qa reasoner answering from it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_jsonl
from rdflib import RDF, RDFS, URIRef
from conftest import ner_sentences, write_conll
from test_relation_extraction import relation_rows

import lccore

DOCUMENTS = [
    {"id": "doc-1", "text": "alice lives in paris. bob was born in rome."},
    {"id": "doc-2", "text": "carol lives in london."},
    {"id": "doc-3", "text": "dave was born in paris. erin lives in rome."},
]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kg-runs")
    ner = lccore.train(
        {
            "model": tiny_model,
            "task": {"name": "ner", "train": str(write_conll(folder / "ner.conll", ner_sentences(150, 1)))},
            "optimizer": {"lr": 3e-3},
            "train": {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 3},
        },
        folder / "ner",
        progress=False,
    )
    rows = relation_rows(240, 1)
    for row in rows:  # the NER run's type names
        row["head"]["type"], row["tail"]["type"] = row["head"]["type"].upper(), row["tail"]["type"].upper()
    relations = lccore.train(
        {
            "model": tiny_model,
            "task": {"name": "relation_extraction", "train": str(write_jsonl(folder / "re.jsonl", rows))},
            "optimizer": {"lr": 3e-3},
            "train": {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 2},
        },
        folder / "re",
        progress=False,
    )
    return lccore.load(ner.output_dir), lccore.load(relations.output_dir)


@pytest.fixture()
def documents(tmp_path):
    return write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)


def build(runs, documents, store, **kwargs):
    from lccore_kg_reasoning.build import build_graph, read_documents

    ner, relations = runs
    return build_graph(ner, relations, read_documents(documents), store, **kwargs)


def test_entities_relations_and_provenance_reach_the_store(runs, documents):
    from lccore_kg import VOCAB, open_store

    store = open_store("memory")
    counts = build(runs, documents, store)
    assert counts["documents"] == 3 and counts["sentences"] == 5
    alice, paris = URIRef("urn:lccore:entity:per:alice"), URIRef("urn:lccore:entity:loc:paris")
    lives_in = URIRef("urn:lccore:relation:lives_in")
    assert store.query(f"ASK {{ <{alice}> <{lives_in}> <{paris}> }}")["value"]
    assert store.query(f"ASK {{ <{alice}> <{RDF.type}> <urn:lccore:type:PER> ; <{RDFS.label}> \"alice\" }}")["value"]

    rows = store.query(f"""
        SELECT ?source ?sentence ?start ?end ?model ?confidence WHERE {{
          ?s a <{RDF.Statement}> ; <{RDF.subject}> <{alice}> ; <{RDF.predicate}> <{lives_in}> ; <{RDF.object}> <{paris}> ;
             <{VOCAB.source}> ?source ; <{VOCAB.sentence}> ?sentence ; <{VOCAB.start}> ?start ; <{VOCAB.end}> ?end ;
             <{VOCAB.model}> ?model ; <{VOCAB.confidence}> ?confidence }}""")["rows"]
    assert len(rows) == 1
    row = rows[0]
    text = DOCUMENTS[0]["text"]
    assert str(row["source"]) == "doc-1" and int(row["sentence"]) == 1
    assert text[int(row["start"]) : int(row["end"])] == "alice lives in paris"  # offsets into the document
    assert str(row["model"]) == "re" and 0.5 <= float(row["confidence"]) <= 1.0


def test_rerunning_adds_nothing_and_a_crash_leaves_whole_batches(runs, documents):
    from lccore_kg import open_store

    store = open_store("memory")
    build(runs, documents, store)
    size = len(store)
    again = build(runs, documents, store)
    assert again["new_triples"] == 0 and len(store) == size

    class Failing:  # the relation model fails on the second batch (one document per batch)
        def __init__(self, inner):
            self.inner, self.calls, self.run_dir, self.task = inner, 0, inner.run_dir, inner.task

        def predict(self, rows, **kwargs):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("killed")
            return self.inner.predict(rows, **kwargs)

    from lccore_kg_reasoning.build import build_graph, read_documents

    fresh = open_store("memory")
    ner, relations = runs
    with pytest.raises(RuntimeError):
        build_graph(ner, Failing(relations), read_documents(documents), fresh, batch_size=1)
    assert fresh.query("ASK { <urn:lccore:entity:per:alice> ?p ?o }")["value"]  # batch 1 is in
    assert not fresh.query("ASK { <urn:lccore:entity:per:carol> ?p ?o }")["value"]  # batch 2 left nothing
    build_graph(ner, relations, read_documents(documents), fresh, batch_size=1)
    assert len(fresh) == size


@pytest.fixture()
def graph(runs, documents):
    from lccore_kg import open_store

    store = open_store("memory")
    build(runs, documents, store)
    return store


@pytest.mark.parametrize(
    ("question", "answer"),
    [("Where does Alice live?", "paris"), ("Who lives in London?", "carol"), ("Where was Bob born?", "rome")],
)
def test_kg_qa_answers_from_the_triples_and_shows_them(graph, question, answer):
    reasoner = lccore.Engine().create("reasoner", "kg_qa", {})
    result = reasoner.answer(question, graph=graph)
    assert result["answer"] == answer
    subject, predicate, object_ = result["evidence"][0]
    assert answer in (subject.rsplit(":", 1)[-1], object_.rsplit(":", 1)[-1])
    assert graph.query(f"ASK {{ <{subject}> <{predicate}> <{object_}> }}")["value"]  # the evidence is in the graph


def test_kg_qa_with_an_ner_run_and_without_a_known_entity(graph, runs):
    reasoner = lccore.Engine().create("reasoner", "kg_qa", {"ner": str(runs[0].run_dir)})
    assert reasoner.answer("where does erin live ?", graph=graph)["answer"] == "rome"
    unknown = reasoner.answer("where does zed live ?", graph=graph)
    assert unknown["answer"] is None and unknown["entities"] == []


def test_kg_build_and_ask_cli(runs, documents, tmp_path):
    store = tmp_path / "store"
    ner, relations = runs
    build_cmd = [sys.executable, "-m", "lccore", "kg", "build", "--ner", str(ner.run_dir), "--re", str(relations.run_dir), "--input", str(documents), "--store", str(store), "-q"]
    first = subprocess.run(build_cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(build_cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and json.loads(second.stdout)["new_triples"] == 0
    asked = subprocess.run([sys.executable, "-m", "lccore", "kg", "ask", str(store), "Where does Alice live?", "--json"], capture_output=True, text=True, timeout=300)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["answer"] == "paris"
    log = tmp_path / "audit.jsonl"
    guarded = [sys.executable, "-m", "lccore", "kg", "ask", str(store), "--policy", "toxicity", "--policy", "pii", "--audit-log", str(log), "--json"]
    refused = subprocess.run([*guarded, "Where the shit does Alice live?"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 0 and json.loads(refused.stdout)["refused"] is True
    redacted = subprocess.run([*guarded, "Where does Alice live? Write to me at eve@example.com"], capture_output=True, text=True, timeout=300)
    assert json.loads(redacted.stdout)["answer"] == "paris"  # the e-mail address was redacted, the question still answered
    assert "eve@example.com" not in log.read_text() and "shit" not in log.read_text()
    missing = subprocess.run([*build_cmd[:-3], "--input", str(tmp_path / "nope.jsonl"), "--store", str(store)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr


def test_kg_build_shows_a_bar_over_the_input_bytes_with_the_sentences_done(runs, documents, tmp_path, capsys, bars):
    from lccore.cli import main

    ner, relations = runs
    assert main(["kg", "build", "--ner", str(ner.run_dir), "--re", str(relations.run_dir), "--input", str(documents), "--store", str(tmp_path / "store")]) == 0
    counts = json.loads(capsys.readouterr().out)
    (bar,) = bars
    size = documents.stat().st_size
    assert (bar.desc, bar.unit, bar.total, bar.n, bar.enabled) == ("kg build", "B", size, size, True)
    assert bar.postfix == f"{counts['sentences']} sentences"  # not "5sentence"


def test_literal_helpers():
    from lccore_kg_reasoning.build import entity_iri, normalise, sentences

    assert normalise("  New   York. ") == "new york"
    assert entity_iri("urn:lccore:", "LOC", "New York") == URIRef("urn:lccore:entity:loc:new_york")
    text = "One. Two!  Three?"
    assert [text[a:b] for a, b, _ in sentences(text)] == ["One.", "Two!", "Three?"]
    # abbreviations, initials and decimals do not end a sentence (issue 18: "Dr." did)
    text = "  Dr. Smith lives in New York. He works for Acme Inc. in Paris, says J. R. Doe.\nIt costs 3.5 million."
    split = list(sentences(text))
    assert [s for _, _, s in split] == ["Dr. Smith lives in New York.", "He works for Acme Inc. in Paris, says J. R. Doe.", "It costs 3.5 million."]
    assert all(text[a:b] == s for a, b, s in split)  # offsets into the document, for provenance


def test_kg_qa_with_a_generator_writes_the_evidence_into_its_prompt(graph, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("alice lives in paris .\ncarol lives in london .\n" * 20, encoding="utf-8")
    generator = lccore.train(
        {"model": {"architecture": "gpt2", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 300},
         "task": {"name": "clm", "train": str(corpus)}, "train": {"epochs": 1, "max_length": 32}},
        tmp_path / "generator", progress=False,
    )
    reasoner = lccore.Engine().create("reasoner", "kg_qa", {"generator": str(generator.output_dir), "max_new_tokens": 4})
    result = reasoner.answer("Where does Alice live?", graph=graph)
    assert "- alice lives in paris" in result["generated_from"] and result["generated_from"].endswith("Answer:")
    assert ["urn:lccore:entity:per:alice", "urn:lccore:relation:lives_in", "urn:lccore:entity:loc:paris"] in result["evidence"]
    assert isinstance(result["answer"], str)
