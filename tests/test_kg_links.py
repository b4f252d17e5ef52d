"""Link prediction over a store: `lccore kg embed | predict | drop-inferred`, inferred links kept
apart from facts, and `kg stats` telling them apart."""

from __future__ import annotations

import json
import pickle

import pytest
from rdflib import RDF, RDFS, Literal, URIRef

import lccore
from lccore.cli import main

pytest.importorskip("pykeen")

EX = "http://example.org/"
PARENT_OF, CHILD_OF = URIRef(EX + "parentOf"), URIRef(EX + "childOf")
#: Pairs 0..PAIRS-1 are stated both ways; the last pair only as parentOf: childOf for it is the
#: link to infer (the inverse pattern, which TransE learns as childOf = -parentOf).
PAIRS = 16
HIDDEN = PAIRS - 1
#: Small enough to train in about a second; TransE finds the hidden link with these on every seed tried.
TRAINING = ["--model", "TransE", "--training", "slcwa", "--epochs", "200", "--dim", "16", "--batch-size", "8", "--learning-rate", "0.02", "--negatives", "1", "-q"]


def parent(i: int) -> URIRef:
    return URIRef(f"{EX}a{i}")


def child(i: int) -> URIRef:
    return URIRef(f"{EX}c{i}")


def cli(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def one_line_error(result, *fragments) -> str:
    status, _, err = result
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("lccore: error: "), (status, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def family_store(path):
    """An Oxigraph store with the family links, labels, types and some provenance."""
    from lccore_kg import open_store

    store = open_store(str(path))
    for i in range(PAIRS):
        store.add([(parent(i), PARENT_OF, child(i))], provenance={"source": f"doc-{i}", "sentence": 1, "model": "re-run", "confidence": 0.9})
        if i != HIDDEN:
            store.add([(child(i), CHILD_OF, parent(i))], provenance={"source": f"doc-{i}", "sentence": 2})
        store.add([(parent(i), RDFS.label, Literal(f"parent {i}")), (child(i), RDFS.label, Literal(f"child {i}")),
                   (parent(i), RDF.type, URIRef(EX + "Person")), (child(i), RDF.type, URIRef(EX + "Person"))])
    store.add([(URIRef(EX + "Person"), RDFS.subClassOf, URIRef(EX + "Agent"))])
    store.close()
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store and embeddings trained on it through `lccore kg embed` (shared: read-only use)."""
    folder = tmp_path_factory.mktemp("kg-links")
    store = family_store(folder / "kg")
    status = main(["kg", "embed", str(store), "--out", str(folder / "emb"), *TRAINING])
    assert status == 0
    return store, folder / "emb"


@pytest.fixture()
def writable(trained, tmp_path):
    """A fresh copy of the family store (for tests that write), with the shared embeddings."""
    return family_store(tmp_path / "kg"), trained[1]


def test_training_reads_only_links_between_entities(trained):
    from lccore_kg import open_store
    from lccore_kg_reasoning.links import graph_links

    store = open_store(str(trained[0]), write=False)
    try:
        links = graph_links(store)
    finally:
        store.close()
    expected = {(str(parent(i)), str(PARENT_OF), str(child(i))) for i in range(PAIRS)}
    expected |= {(str(child(i)), str(CHILD_OF), str(parent(i))) for i in range(HIDDEN)}
    assert set(links) == expected  # no labels, types, subClassOf, nor provenance statements
    info = json.loads((trained[1] / "embedding.json").read_text())
    assert info["links"] == len(expected) and info["entities"] == 2 * PAIRS and info["relations"] == 2
    # what trained it, as given: sLCWA with the model's own loss, one negative, no reciprocal relations
    assert (info["training"], info["reciprocal"], info["negatives"], info["loss"]) == ("slcwa", False, 1, "MarginRankingLoss")
    assert info["requested"] == {"training": "slcwa", "reciprocal": None}


def test_predict_finds_the_link_the_graph_does_not_state(trained, capsys):
    store, embeddings = trained
    status, out, _ = cli(capsys, "kg", "predict", store, "--embeddings", embeddings, "--head", f"child {HIDDEN}", "--relation", "childOf", "--top", "3", "--json")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["tail"] == str(parent(HIDDEN)) and rows[0]["label"] == f"parent {HIDDEN}"
    assert rows[0]["head"] == str(child(HIDDEN)) and rows[0]["relation"] == str(CHILD_OF)
    assert rows[0]["probability"] > rows[1]["probability"] and not rows[0]["stated"]
    # and the other way round: who has parent HIDDEN as their childOf-tail
    status, out, _ = cli(capsys, "kg", "predict", store, "--embeddings", embeddings, "--tail", str(parent(HIDDEN)), "--relation", str(CHILD_OF), "--top", "1")
    assert status == 0 and f"<{child(HIDDEN)}>" in out.splitlines()[0] and f"(child {HIDDEN})" in out


def test_stated_links_are_left_out_unless_asked(trained, capsys):
    store, embeddings = trained
    ask = ("kg", "predict", store, "--embeddings", embeddings, "--head", "child 3", "--relation", "childOf", "--top", "40", "--json")
    listed = [json.loads(line) for line in cli(capsys, *ask)[1].splitlines()]
    assert str(parent(3)) not in {row["tail"] for row in listed}
    listed = [json.loads(line) for line in cli(capsys, *ask, "--include-known")[1].splitlines()]
    assert [row["stated"] for row in listed if row["tail"] == str(parent(3))] == [True]
    assert not any(row["stated"] for row in listed if row["tail"] != str(parent(3)))


def test_accepted_links_are_inferred_not_facts_and_stats_tell_them_apart(writable, capsys):
    from lccore_kg import VOCAB, open_store

    store_dir, embeddings = writable
    before = json.loads(cli(capsys, "kg", "stats", store_dir, "--json")[1])
    predict = ("kg", "predict", store_dir, "--embeddings", embeddings, "--head", f"child {HIDDEN}", "--relation", "childOf", "--top", "1", "--accept", "0")
    status, out, _ = cli(capsys, *predict)
    assert status == 0 and "1 inferred links written" in out

    store = open_store(str(store_dir), write=False)
    try:
        link = (child(HIDDEN), CHILD_OF, parent(HIDDEN))
        assert not store.query(f"ASK {{ <{link[0]}> <{link[1]}> <{link[2]}> }}")["value"]  # not asserted as a fact
        rows = store.query(f"""SELECT ?st ?model ?method ?score ?p ?time ?emb WHERE {{
            ?st a <{VOCAB.InferredLink}> , <{RDF.Statement}> ; <{RDF.subject}> <{link[0]}> ; <{RDF.predicate}> <{link[1]}> ; <{RDF.object}> <{link[2]}> ;
                <{VOCAB.model}> ?model ; <{VOCAB.method}> ?method ; <{VOCAB.score}> ?score ; <{VOCAB.probability}> ?p ; <{VOCAB.time}> ?time ; <{VOCAB.embeddings}> ?emb }}""")["rows"]
        assert len(rows) == 1 and str(rows[0]["model"]) == "TransE" and str(rows[0]["method"]) == "link-prediction"
        assert 0 < float(rows[0]["p"]) <= 1 and str(rows[0]["emb"]) == str(embeddings.resolve()) and rows[0]["time"].datatype is not None
        assert link not in store.neighbours(str(child(HIDDEN)), hops=1)  # kg ask's evidence never includes it
    finally:
        store.close()

    after = json.loads(cli(capsys, "kg", "stats", store_dir, "--json")[1])
    assert after["inferred_links"] == before["inferred_links"] + 1 == 1 and after["inferred_links_by_model"] == {"TransE": 1}
    assert after["facts"] == before["facts"] and after["provenance_statements"] == before["provenance_statements"] == 2 * PAIRS - 1
    text = cli(capsys, "kg", "stats", store_dir, "--infer", "rdfs")[1]
    assert "inferred links         1" in text and "TransE 1" in text
    rdfs = int(next(line for line in text.splitlines() if line.startswith("rdfs inferred")).split()[2])
    assert rdfs > 0  # a4 a ex:Agent and the like: counted, never stored
    assert json.loads(cli(capsys, "kg", "stats", store_dir, "--json")[1])["triples"] == after["triples"]

    # the same prediction again adds nothing; the next model does not train on it
    assert "0 inferred links written" in cli(capsys, *predict)[1]
    from lccore_kg_reasoning.links import graph_links

    store = open_store(str(store_dir), write=False)
    try:
        assert (str(link[0]), str(link[1]), str(link[2])) not in graph_links(store)
    finally:
        store.close()

    status, out, _ = cli(capsys, "kg", "drop-inferred", store_dir, "--embeddings", embeddings)
    assert status == 0 and "1 inferred links removed" in out
    assert json.loads(cli(capsys, "kg", "stats", store_dir, "--json")[1]) == before  # the facts and their provenance untouched


def test_unknown_names_and_bad_input_are_one_line_errors(trained, tmp_path, capsys):
    store, embeddings = trained
    base = ("kg", "predict", store, "--embeddings", embeddings)
    one_line_error(cli(capsys, *base, "--head", "nobody", "--relation", "childOf"), "--head: 'nobody' is no entity the embeddings were trained on")
    one_line_error(cli(capsys, *base, "--head", "child 1", "--relation", "marriedTo"), "--relation: 'marriedTo' is no relation")
    one_line_error(cli(capsys, *base, "--head", "child 1", "--relation", "childOf", "--top", "0"), "--top")
    one_line_error(cli(capsys, "kg", "predict", store, "--embeddings", tmp_path / "none", "--head", "x", "--relation", "y"), "no such embeddings directory")

    empty = tmp_path / "empty"
    from lccore_kg import open_store

    s = open_store(str(empty))
    s.add([(parent(0), RDFS.label, Literal("only a label"))])
    s.close()
    one_line_error(cli(capsys, "kg", "embed", empty, "--out", tmp_path / "e1", "-q"), "no links to learn from")
    one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e2", "--max-triples", "10", "-q"), f"{2 * PAIRS - 1} links, more than --max-triples 10")
    one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e3", "--epochs", "100000"), "--epochs")
    one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e3", "--dim", "4096"), "--dim")
    one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e3", "--training", "cwa"), "--training: invalid choice: 'cwa'")
    for loop in ("lcwa", "auto"):
        one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e3", "--training", loop, "--negatives", "4"), "--negatives: only with --training slcwa")
    # an lcwa batch scores every entity at once: one too large for memory is refused before training
    one_line_error(cli(capsys, "kg", "embed", store, "--out", tmp_path / "e3", "--training", "lcwa", "--batch-size", "65536", "--dim", "1024", "-q"),
                   "--training lcwa: a batch of 65536 x 32 entities x dim 1024", "--training slcwa")
    assert not (tmp_path / "e3").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    one_line_error(cli(capsys, "kg", "embed", store, "--out", mine, "-q"), "holds no embeddings")
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def test_damaged_embeddings_are_one_line_errors(trained, tmp_path):
    import shutil

    from lccore_kg_reasoning import links

    for name, content, expected in (
        ("entities.json", "{not json", "entities.json: not readable JSON"),
        ("entities.json", json.dumps({"a": 0, "b": 0}), "each once"),
        ("model.safetensors", "garbage", "not a safetensors file"),
        ("embedding.json", json.dumps({"model": "TransE", "dim": 8}), "does not fit a TransE of dim 8"),
    ):
        copy = tmp_path / f"copy-{name}-{len(content)}"
        shutil.copytree(trained[1], copy)
        (copy / name).write_text(content)
        with pytest.raises(lccore.ConfigError, match=expected):
            links.load(copy)


def test_saved_models_load_without_pickle(trained, tmp_path, monkeypatch):
    import torch

    from lccore_kg import open_store
    from lccore_kg_reasoning import links

    assert sorted(p.name for p in trained[1].iterdir()) == sorted(links.FILES)
    for name in ("entities.json", "relations.json", "embedding.json"):
        json.loads((trained[1] / name).read_text())  # plain JSON
    raw = (trained[1] / "model.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header])["__metadata__"] == {"model": "TransE"}  # safetensors: a JSON header, then raw tensors

    def refuse(*args, **kwargs):
        raise AssertionError("an embeddings directory must load without unpickling")

    store = open_store(str(trained[0]), write=False)
    triples = links.graph_links(store)
    store.close()
    for model, training in (("RotatE", "lcwa"), ("ComplEx", "slcwa"), ("TransE", "lcwa")):
        embeddings = links.train(triples, links.TrainingOptions(model=model, epochs=2, dim=8, training=training))
        assert embeddings.info["reciprocal"] is (training == "lcwa")  # reciprocal relations: twice the relation rows
        folder = links.save(embeddings, tmp_path / model)
        with monkeypatch.context() as patch:
            for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
                patch.setattr(target, name, refuse)
            loaded = links.load(folder)
        for end in (str(parent(0)), str(child(3))):
            for known in ("head", "tail"):
                expected = embeddings.scores(relation=str(PARENT_OF), **{known: end})
                assert torch.equal(loaded.scores(relation=str(PARENT_OF), **{known: end}), expected)
        assert loaded.info["model"] == model and loaded.entity_to_id == embeddings.entity_to_id
        assert loaded.model.use_inverse_triples is embeddings.info["reciprocal"]


def test_the_same_store_and_seed_train_the_same_model(trained, tmp_path, capsys):
    store, embeddings = trained
    assert cli(capsys, "kg", "embed", store, "--out", tmp_path / "again", *TRAINING)[0] == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (embeddings / "model.safetensors").read_bytes()
    # an earlier kg embed's directory is replaced in place
    assert cli(capsys, "kg", "embed", store, "--out", tmp_path / "again", *TRAINING[:-1], "--seed", "1", "-q")[0] == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() != (embeddings / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "again" / "embedding.json").read_text())["seed"] == 1


def test_default_training_is_lcwa_with_reciprocal_relations_on_a_small_graph(trained, tmp_path, capsys):
    """`kg embed` with no settings: auto picks LCWA, cross-entropy and reciprocal relations for a
    graph this small, says so, records it, and the model finds the hidden link from both ends
    (a missing head through the inverse relation: what LCWA alone never learns)."""
    from lccore_kg_reasoning import links

    store = trained[0]
    status, out, _ = cli(capsys, "kg", "embed", store, "--out", tmp_path / "auto", "--epochs", "60", "-q")
    assert status == 0 and "RotatE dim 64 (lcwa, reciprocal), 31 links" in out
    info = json.loads((tmp_path / "auto" / "embedding.json").read_text())
    assert (info["model"], info["training"], info["reciprocal"], info["negatives"], info["loss"]) == ("RotatE", "lcwa", True, None, "CrossEntropyLoss")
    assert info["requested"] == {"training": "auto", "reciprocal": None} and info["relations"] == 2
    ask = ("kg", "predict", store, "--embeddings", tmp_path / "auto", "--relation", "childOf", "--top", "1", "--json")
    assert json.loads(cli(capsys, *ask, "--head", f"child {HIDDEN}")[1])["tail"] == str(parent(HIDDEN))
    assert json.loads(cli(capsys, *ask, "--tail", f"parent {HIDDEN}")[1])["head"] == str(child(HIDDEN))
    # a missing head is the inverse relation's tail (PyKEEN stores r at row 2r, its inverse at 2r + 1)
    import torch

    embeddings = links.load(tmp_path / "auto")
    r, t = embeddings.relation_to_id[str(CHILD_OF)], embeddings.entity_to_id[str(parent(HIDDEN))]
    with torch.inference_mode():
        inverse_tails = embeddings.model.score_t(torch.tensor([[t, 2 * r + 1]]))[0]
    assert torch.allclose(embeddings.scores(relation=str(CHILD_OF), tail=str(parent(HIDDEN))), inverse_tails)

    # what auto weighs: (head, relation) and (tail, inverse) pairs times entities, against the bound
    triples = [(f"e{i}", "r", f"e{i + 1}") for i in range(9)]
    assert links.lcwa_scores(triples) == (9 + 9) * 10 and links.lcwa_scores(triples, reciprocal=False) == 9 * 10
    assert links.resolve_options(links.TrainingOptions(), triples).training == "lcwa"
    big = [(f"e{i}", f"r{i % 50}", f"e{(i * 7919) % 5000}") for i in range(5000)]
    assert links.lcwa_scores(big) > links.LCWA_MAX_SCORES
    chosen = links.resolve_options(links.TrainingOptions(), big)
    assert (chosen.training, chosen.reciprocal, chosen.negatives_used) == ("slcwa", False, links.DEFAULT_NEGATIVES)
    assert links.resolve_options(links.TrainingOptions(training="slcwa", reciprocal=True), triples).reciprocal is True


def test_predictions_keep_to_the_types_the_relation_has(tmp_path, capsys):
    """A birthplace is a place: candidates whose rdf:type the relation's stated ends never have are
    left out (and said so), unless --any-type; an untyped graph is not filtered."""
    from lccore_kg import open_store

    born_in, person, city = URIRef(EX + "bornIn"), URIRef(EX + "Person"), URIRef(EX + "City")
    store = open_store(str(tmp_path / "kg"))
    for i in range(8):
        store.add([(URIRef(f"{EX}p{i}"), born_in, URIRef(f"{EX}city{i % 3}")), (URIRef(f"{EX}p{i}"), RDF.type, person)])
    store.add([(URIRef(f"{EX}city{i}"), RDF.type, city) for i in range(3)])
    store.close()
    assert main(["kg", "embed", str(tmp_path / "kg"), "--out", str(tmp_path / "emb"), *TRAINING]) == 0
    capsys.readouterr()
    ask = ("kg", "predict", tmp_path / "kg", "--embeddings", tmp_path / "emb", "--head", EX + "p0", "--relation", "bornIn", "--top", "20", "--json")
    status, out, err = cli(capsys, *ask)
    tails = [json.loads(line)["tail"] for line in out.splitlines()]
    assert status == 0 and tails and all("/city" in tail for tail in tails)  # no person as a birthplace
    assert "left out 7 higher-ranked entities of another type" in err and "--any-type" in err
    status, out, err = cli(capsys, *ask, "--any-type")
    tails = [json.loads(line)["tail"] for line in out.splitlines()]
    assert status == 0 and sum("/p" in tail for tail in tails) == 7 and not err
