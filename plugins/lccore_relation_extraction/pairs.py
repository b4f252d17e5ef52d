"""Relations between the entities an NER model finds: the step from text to triples.

    from lccore_relation_extraction.pairs import extract_relations
    extract_relations(lccore.load("runs/ner"), lccore.load("runs/re"), ["Alice lives in Paris."])
"""

from __future__ import annotations

from itertools import permutations


def entity_pairs(text: str, entities: list[dict]) -> list[dict]:
    """One relation-extraction input per ordered pair of distinct, non-overlapping entities."""
    rows = []
    for head, tail in permutations(entities, 2):
        if head["start"] < tail["end"] and tail["start"] < head["end"]:
            continue
        rows.append({
            "text": text,
            "head": {"start": head["start"], "end": head["end"], "type": head["type"]},
            "tail": {"start": tail["start"], "end": tail["end"], "type": tail["type"]},
        })
    return rows


def extract_relations(ner_predictor, re_predictor, texts: list[str], *, keep_no_relation: bool = False) -> list[list[dict]]:
    """For each text: ``{"head", "tail", "relation", "score"}`` for every entity pair the
    relation model links (``head``/``tail`` are the NER entities with their text and offsets)."""
    found = ner_predictor.predict(texts, guard=False)
    rows, owners = [], []
    for index, (text, record) in enumerate(zip(texts, found)):
        for row in entity_pairs(text, record["entities"]):
            rows.append(row)
            owners.append(index)
    results: list[list[dict]] = [[] for _ in texts]
    no_relation = re_predictor.task.options.no_relation
    for owner, row, prediction in zip(owners, rows, re_predictor.predict(rows, guard=False) if rows else []):
        if prediction["relation"] == no_relation and not keep_no_relation:
            continue
        text = row["text"]
        results[owner].append({
            "head": {**row["head"], "text": text[row["head"]["start"] : row["head"]["end"]]},
            "tail": {**row["tail"], "text": text[row["tail"]["start"] : row["tail"]["end"]]},
            **prediction,
        })
    return results
