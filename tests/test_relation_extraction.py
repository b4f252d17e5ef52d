"""The `relation_extraction` task: typed entity markers, a marker head, TACRED-style scores."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

import lccore
from conftest import PEOPLE, write_jsonl

CITIES = ["paris", "london", "rome"]
PATTERNS = {"lives_in": "{p} lives in {c}", "born_in": "{p} was born in {c}", "no_relation": "{p} heard of {c}"}
FILLER = ["the", "film", "was", "a", "show", "today", "and", "it", "very"]


def relation_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        relation = list(PATTERNS)[i % 3]
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        prefix = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 6)))
        sentence = PATTERNS[relation].format(p=person, c=city)
        text = f"{prefix} {sentence} . {' '.join(rng.choice(FILLER) for _ in range(rng.randint(0, 6)))}".strip()
        p_start = text.index(sentence)
        c_start = p_start + sentence.rindex(city)
        person_span = {"start": p_start, "end": p_start + len(person), "type": "per"}
        city_span = {"start": c_start, "end": c_start + len(city), "type": "loc"}
        if i % 4 == 3:  # the reversed pair: a city is not born in a person
            person_span, city_span, relation = city_span, person_span, "no_relation"
        rows.append({"text": text, "head": person_span, "tail": city_span, "relation": relation})
    return rows


@pytest.fixture(scope="session")
def re_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("re")
    config = {
        "model": tiny_model,
        "task": {
            "name": "relation_extraction",
            "train": str(write_jsonl(folder / "train.jsonl", relation_rows(240, 1))),
            "dev": str(write_jsonl(folder / "dev.jsonl", relation_rows(30, 2))),
            "test": str(write_jsonl(folder / "test.jsonl", relation_rows(45, 3))),
        },
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 2},
    }
    return lccore.train(config, folder / "run", progress=False)


def test_relation_extraction_learns(re_run):
    after = re_run.metrics["test"]["after"]
    assert after["f1"] >= 0.85 and after["f1"] > re_run.metrics["test"]["before"]["f1"] + 0.3
    assert re_run.config.head.name == "entity_marker_classifier"


def test_tacred_scores_exclude_no_relation(re_run):
    task = lccore.load(re_run.output_dir).task
    examples = [task.parse_input({"text": "alice lives in rome", "head": {"start": 0, "end": 5}, "tail": {"start": 15, "end": 19}}, "x")] * 4
    examples = [e.__class__(e.text, e.head, e.tail, gold, "x") for e, gold in zip(examples, ["lives_in", "no_relation", "born_in", "no_relation"])]
    predictions = [{"relation": r} for r in ["lives_in", "lives_in", "no_relation", "no_relation"]]
    # one right positive; 2 positive guesses; 2 positive golds
    assert task.metrics(predictions, examples) == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5}


def test_relation_prediction_and_saved_encoder(re_run):
    predictor = lccore.load(re_run.output_dir)
    text = "the show was a film . carol was born in london"
    start = text.index("carol")
    rows = [
        {"text": text, "head": {"start": start, "end": start + 5, "type": "per"}, "tail": {"start": text.index("london"), "end": len(text), "type": "loc"}},
        {"text": "dave heard of rome", "head": {"start": 0, "end": 4, "type": "per"}, "tail": {"start": 14, "end": 18, "type": "loc"}},
    ]
    predictions = predictor.predict(rows)
    assert [p["relation"] for p in predictions] == ["born_in", "no_relation"]
    assert all(0 < p["score"] <= 1 for p in predictions)
    from transformers import AutoModel

    assert AutoModel.from_pretrained(re_run.model_dir).config.hidden_size == 32


def test_long_text_is_windowed_around_the_entities(re_run):
    predictor = lccore.load(re_run.output_dir)
    text = "the film " * 30 + "erin lives in paris ." + " the show" * 30
    start = text.index("erin")
    row = {"text": text, "head": {"start": start, "end": start + 4, "type": "per"}, "tail": {"start": text.index("paris"), "end": text.index("paris") + 5, "type": "loc"}}
    feature = predictor.task.encode([predictor.task.parse_input(row, "x")], predictor.tokenizer, 32)[0]
    tokens = predictor.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert len(tokens) <= 32 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[feature["head_index"]] == "@" and tokens[feature["tail_index"]] == "#"
    assert tokens.count("@") == 2 and tokens.count("#") == 2  # both entities whole, markers closed
    far = {"text": "erin " + "the film " * 30 + "paris", "head": {"start": 0, "end": 4}, "tail": {"start": 5 + 9 * 30, "end": 10 + 9 * 30}}
    with pytest.raises(lccore.DataError, match="input 1: the entities are .* tokens apart"):
        predictor.predict([far])


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"text": "alice", "head": {"start": 0, "end": 5}, "tail": {"start": 3, "end": 9}, "relation": "x"}, "'tail' span 3:9 is outside the text"),
        ({"text": "alice paris", "head": {"start": 0, "end": 5}, "tail": {"start": 2, "end": 8}, "relation": "x"}, "'head' 0:5 and 'tail' 2:8 overlap"),
        ({"text": "alice paris", "head": [0, 5], "tail": {"start": 6, "end": 11}, "relation": "x"}, "'head' must be an object with integer 'start' and 'end'"),
    ],
)
def test_bad_relation_rows(tiny_model, tmp_path, row, expected):
    good = relation_rows(3, 9)
    data = write_jsonl(tmp_path / "train.jsonl", good + [row])
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": tiny_model, "task": {"name": "relation_extraction", "train": str(data)}}))
    result = subprocess.run([sys.executable, "-m", "lccore.cli", "train", str(config), "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == f"lccore: error: {data}:4: {expected}" or result.stderr.strip().startswith(f"lccore: error: {data}:4: {expected}")


def test_relations_between_the_entities_ner_found(re_run):
    from lccore_relation_extraction.pairs import extract_relations

    class FoundEntities:  # stands in for an NER predictor: same predict() contract
        def predict(self, texts, guard=True):
            return [{"entities": [{"text": "bob", "type": "per", "start": 0, "end": 3}, {"text": "rome", "type": "loc", "start": 17, "end": 21}]}] * len(texts)

    results = extract_relations(FoundEntities(), lccore.load(re_run.output_dir), ["bob was born in  rome"])
    assert [(r["head"]["text"], r["relation"], r["tail"]["text"]) for r in results[0]] == [("bob", "born_in", "rome")]
