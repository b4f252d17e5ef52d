"""From text to triples: NER finds the entities, relation extraction links each pair, and every
entity and relation goes to the store with where it was read.

Entities get stable IRIs from their type and normalised label (``urn:lccore:entity:per:alice``),
with ``rdf:type`` (``urn:lccore:type:PER``) and ``rdfs:label``; relations become predicates
(``urn:lccore:relation:lives_in``). Each extracted triple is reified with its provenance —
source document, sentence number, character offsets, model, confidence — by the backend, under a
statement IRI derived from the triple and its provenance: running the same input again adds
nothing. Documents are written in batches, one transaction each, so a crash leaves whole batches.
"""

from __future__ import annotations

import functools

import re
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

from rdflib import RDF, RDFS, Literal, URIRef

import lccore
from lccore.data import read_jsonl

DEFAULT_BASE = "urn:lccore:"
#: ``batch_size`` (sentences per transaction, and per NER batch): at most this many.
MAX_BATCH_SIZE = 4096
#: An absolute IRI: a scheme, then no character an IRI may not hold.
_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*")


def check_build_options(*, base: str, min_confidence: float, batch_size: int, flags: bool = False) -> None:
    """ConfigError naming the option (as a command-line flag with ``flags``), for values
    :func:`build_graph` cannot use."""

    def refuse(name: str, expected: str, value):
        key = f"--{name.replace('_', '-')}" if flags else name
        raise lccore.ConfigError(f"kg build: {key}: expected {expected}, got {value!r}")

    if not isinstance(base, str) or not _IRI.fullmatch(base):
        refuse("base", "an absolute IRI prefix such as urn:lccore: or http://example.org/kg/", base)
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1:
        refuse("min_confidence", "a number from 0 to 1", min_confidence)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        refuse("batch_size", f"an integer from 1 to {MAX_BATCH_SIZE}", batch_size)


def normalise(label: str) -> str:
    """The form two mentions of one entity share: NFKC, case-folded, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", label).casefold().split()).strip(" .,;:!?\"'")


def slug(text: str) -> str:
    return quote(normalise(text).replace(" ", "_"), safe="_-.")


def entity_iri(base: str, type_: str, label: str) -> URIRef:
    return URIRef(f"{base}entity:{slug(type_)}:{slug(label)}")


def type_iri(base: str, type_: str) -> URIRef:
    return URIRef(f"{base}type:{quote(type_, safe='_-.')}")


def relation_iri(base: str, relation: str) -> URIRef:
    return URIRef(f"{base}relation:{slug(relation)}")


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def sentences(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, sentence) spans of a document, split by pysbd's rules (Golden Rules: "Dr.",
    "Inc.", "U.S.", decimals and initials do not end a sentence)."""
    done = 0
    for span in _segmenter().segment(text):
        sentence = span.sent.strip()
        start = text.find(sentence, done) if sentence else done
        if not sentence:
            continue
        if start < 0:  # pysbd should give the text back unchanged (clean=False); if not, the rest is one sentence
            rest = text[done:]
            if rest.strip():
                yield done + len(rest) - len(rest.lstrip()), len(text.rstrip()), rest.strip()
            return
        done = start + len(sentence)
        yield start, done, sentence


def read_documents(path: str | Path) -> Iterator[tuple[str, str]]:
    """(source id, text) per JSONL line: a string, or an object with "text" and optional "id"."""
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if isinstance(row, str):
            yield where, row
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            yield str(row.get("id", where)), row["text"]
        else:
            raise lccore.DataError(f"{where}: expected a string or an object with a string 'text'")


def build_graph(
    ner, relations, documents: Iterable[tuple[str, str]], store, *,
    base: str = DEFAULT_BASE, min_confidence: float = 0.5, batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Extract and write; returns counts. ``ner`` and ``relations`` are predictors from
    :func:`lccore.load` (an ``ner`` run and a ``relation_extraction`` run)."""
    from lccore_relation_extraction.pairs import entity_pairs

    check_build_options(base=base, min_confidence=min_confidence, batch_size=batch_size)
    ner_model, re_model = Path(ner.run_dir).name, Path(relations.run_dir).name
    no_relation = relations.task.options.no_relation
    counts = {"documents": 0, "sentences": 0, "entities": 0, "relations": 0, "new_triples": 0}

    def flush(batch: list[tuple[str, int, int, str]]) -> None:
        triples, provenance = [], []
        mentions = ner.predict([text for _, _, _, text in batch], guard=False)
        pairs = [(i, row) for i, ((*_, text), record) in enumerate(zip(batch, mentions)) for row in entity_pairs(text, record["entities"])]
        links = relations.predict([row for _, row in pairs], guard=False) if pairs else []
        for (source, number, offset, _), record in zip(batch, mentions):
            for entity in record["entities"]:
                iri = entity_iri(base, entity["type"], entity["text"])
                where = {"source": source, "sentence": number, "start": offset + entity["start"], "end": offset + entity["end"]}
                triples += [(iri, RDF.type, type_iri(base, entity["type"])), (iri, RDFS.label, Literal(entity["text"].strip()))]
                provenance += [{**where, "model": ner_model, "confidence": round(entity["score"], 4)}, None]
                counts["entities"] += 1
        for (index, row), link in zip(pairs, links):
            if link["relation"] == no_relation or link["score"] < min_confidence:
                continue
            source, number, offset, text = batch[index]
            head, tail = row["head"], row["tail"]
            subject = entity_iri(base, head["type"], text[head["start"] : head["end"]])
            object_ = entity_iri(base, tail["type"], text[tail["start"] : tail["end"]])
            triples.append((subject, relation_iri(base, link["relation"]), object_))
            provenance.append({
                "source": source, "sentence": number,
                "start": offset + min(head["start"], tail["start"]), "end": offset + max(head["end"], tail["end"]),
                "model": re_model, "confidence": round(link["score"], 4),
            })
            counts["relations"] += 1
        counts["new_triples"] += store.add(triples, provenance)  # one transaction per batch
        counts["sentences"] += len(batch)
        if progress:
            progress(len(batch))

    batch: list[tuple[str, int, int, str]] = []
    for source, text in documents:
        counts["documents"] += 1
        batch += [(source, number, start, sentence) for number, (start, _, sentence) in enumerate(sentences(text), start=1)]
        if len(batch) >= batch_size:  # whole documents per transaction
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return counts
