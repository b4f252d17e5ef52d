"""The `relation_extraction` task: which relation holds between two entity spans of a text.

A row is `{"text", "head": {"start", "end", "type"}, "tail": {...}, "relation"}` with character
offsets (`type` is optional). The text is marked with typed markers, and a long text is cut to a
window of `train.max_length` tokens that holds both entities; a pair further apart than that is
an error naming the row, not a silent truncation.
"""

from __future__ import annotations

import attrs
import torch

import lccore
from lccore.data import read_records

HEAD_MARKERS, TAIL_MARKERS = ("@", "*"), ("#", "^")


@attrs.frozen
class Span:
    start: int
    end: int
    type: str


@attrs.frozen
class Example:
    text: str
    head: Span
    tail: Span
    relation: str | None
    where: str


def parse_span(value, text: str, key: str, where: str) -> Span:
    if not isinstance(value, dict) or not isinstance(value.get("start"), int) or not isinstance(value.get("end"), int):
        raise lccore.DataError(f"{where}: '{key}' must be an object with integer 'start' and 'end'")
    start, end, kind = value["start"], value["end"], value.get("type", "entity")
    if not 0 <= start < end <= len(text):
        raise lccore.DataError(f"{where}: '{key}' span {start}:{end} is outside the text (length {len(text)})")
    if not isinstance(kind, str) or not kind.strip():
        raise lccore.DataError(f"{where}: '{key}.type' must be a non-empty string")
    return Span(start, end, kind.strip())


def parse_example(row: dict, relation, where: str) -> Example:
    text = row.get("text")
    if not isinstance(text, str):
        raise lccore.DataError(f"{where}: 'text' must be a string")
    head, tail = parse_span(row.get("head"), text, "head", where), parse_span(row.get("tail"), text, "tail", where)
    if head.start < tail.end and tail.start < head.end:
        raise lccore.DataError(f"{where}: 'head' {head.start}:{head.end} and 'tail' {tail.start}:{tail.end} overlap")
    return Example(text, head, tail, relation, where)


def marked(example: Example) -> tuple[str, dict[str, tuple[int, int]]]:
    """The text with typed entity markers, and each entity's (opening, closing) marker positions."""
    pieces, position, markers = [], 0, {}
    for role, span, (outer, inner) in sorted(
        [("head", example.head, HEAD_MARKERS), ("tail", example.tail, TAIL_MARKERS)], key=lambda item: item[1].start
    ):
        pieces.append(example.text[position : span.start])
        opening = sum(len(p) for p in pieces) + 1
        piece = f" {outer} {inner} {span.type} {inner} {example.text[span.start : span.end]} {outer} "
        markers[role] = (opening, opening + len(piece) - 3)
        pieces.append(piece)
        position = span.end
    pieces.append(example.text[position:])
    return "".join(pieces), markers


class RelationExtractionTask(lccore.Task):
    default_head = "entity_marker_classifier"
    metric = "f1"
    metric_names = ("precision", "recall", "f1", "accuracy")

    def __init__(self, options):
        self.options = options
        self.labels: list[str] = list(options.labels or [])

    def read(self, path) -> list[Example]:
        examples = []
        for where, row in read_records(path, required=("text", "head", "tail", "relation")):
            if not isinstance(row["relation"], str) or not row["relation"]:
                raise lccore.DataError(f"{where}: 'relation' must be a non-empty string")
            examples.append(parse_example(row, row["relation"], where))
        return examples

    def parse_input(self, value, where):
        if not isinstance(value, dict):
            raise lccore.DataError(f"{where}: expected an object with 'text', 'head' and 'tail'")
        return parse_example(value, None, where)

    def fit(self, examples) -> None:
        found = sorted({e.relation for e in examples})
        if not self.labels:
            self.labels = found
        unknown = [label for label in found if label not in self.labels]
        if unknown:
            first = next(e for e in examples if e.relation == unknown[0])
            raise lccore.DataError(f"{first.where}: relation '{unknown[0]}' is not in task.labels")
        if len(self.labels) < 2:
            raise lccore.DataError(f"{examples[0].where.rsplit(':', 1)[0]}: training data needs at least 2 relation labels")

    def head_spec(self) -> dict:
        return {"labels": list(self.labels)}

    def restore(self, spec: dict) -> None:
        self.labels = list(spec["labels"])

    def encode(self, examples, tokenizer, max_length):
        index = {label: i for i, label in enumerate(self.labels)}
        room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        features = []
        for example in examples:
            text, markers = marked(example)
            encoding = tokenizer(text, add_special_tokens=False)
            ids = encoding["input_ids"]
            head, tail = encoding.char_to_token(markers["head"][0]), encoding.char_to_token(markers["tail"][0])
            first = min(head, tail)
            last = max(encoding.char_to_token(markers[role][1]) for role in ("head", "tail")) + 1
            if last - first > room:
                raise lccore.DataError(f"{example.where}: the entities are {last - first} tokens apart, more than train.max_length={max_length} allows")
            start = max(0, min(first - (room - (last - first)) // 2, len(ids) - room))
            # Cut the text itself to the window and tokenize that, special tokens included.
            begin = encoding.token_to_chars(start).start
            end = encoding.token_to_chars(min(start + room, len(ids)) - 1).end
            window = tokenizer(text[begin:end])
            feature = {
                "input_ids": window["input_ids"],
                "attention_mask": window["attention_mask"],
                "head_index": window.char_to_token(markers["head"][0] - begin),
                "tail_index": window.char_to_token(markers["tail"][0] - begin),
            }
            if example.relation is not None:
                if example.relation not in index:
                    raise lccore.DataError(f"{example.where}: relation '{example.relation}' was not seen in training (known: {', '.join(self.labels)})")
                feature["labels"] = index[example.relation]
            features.append(feature)
        return features

    def collate(self, features, tokenizer):
        batch = dict(tokenizer.pad([{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features], return_tensors="pt"))
        batch["head_index"] = torch.tensor([f["head_index"] for f in features])
        batch["tail_index"] = torch.tensor([f["tail_index"] for f in features])
        if all("labels" in f for f in features):
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch

    def decode(self, outputs, batch, features):
        scores, best = torch.softmax(outputs.logits.float(), dim=-1).max(dim=-1)
        return [{"relation": self.labels[i], "score": round(float(s), 6)} for i, s in zip(best.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        """Micro precision, recall and F1 over the positive relations, as TACRED scores them."""
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return RelationCounts(self)

    def example_data(self, directory):
        # JSONL rows with typed character spans; one pair in no relation (task.no_relation).
        import json
        from pathlib import Path

        def row(text, head, head_type, tail, tail_type, relation):
            spans = {}
            for key, word, kind in (("head", head, head_type), ("tail", tail, tail_type)):
                start = text.index(word)
                spans[key] = {"start": start, "end": start + len(word), "type": kind}
            return {"text": text, **spans, "relation": relation}

        none = self.options.no_relation
        train = [
            row("alice lives in paris .", "alice", "per", "paris", "loc", "lives_in"),
            row("bob was born in rome .", "bob", "per", "rome", "loc", "born_in"),
            row("carol met dave in london today .", "carol", "per", "dave", "per", none),
            row("in new york erin lives with bob .", "erin", "per", "new york", "loc", "lives_in"),
            row("dave was born in paris .", "dave", "per", "paris", "loc", "born_in"),
        ]
        dev = [
            row("erin lives in london .", "erin", "per", "london", "loc", "lives_in"),
            row("alice met bob in rome .", "alice", "per", "bob", "per", none),
        ]
        paths = {}
        for split, rows in (("train", train), ("dev", dev)):
            path = Path(directory) / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            paths[split] = path
        return paths


class RelationCounts(lccore.MetricsAccumulator):
    """TACRED's micro scores over the positive relations, from five counts."""

    def __init__(self, task):
        super().__init__(task)
        self.correct = self.predicted_positive = self.gold_positive = self.equal = self.pairs = 0

    def update(self, predictions, examples):
        none = self.task.options.no_relation
        for prediction, example in zip(predictions, examples):
            gold, guessed = example.relation, prediction["relation"]
            self.correct += gold == guessed != none
            self.predicted_positive += guessed != none
            self.gold_positive += gold != none
            self.equal += gold == guessed
            self.pairs += 1

    def compute(self):
        precision = self.correct / self.predicted_positive if self.predicted_positive else 0.0
        recall = self.correct / self.gold_positive if self.gold_positive else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "accuracy": self.equal / self.pairs}
