"""The `headline_match` task: a headline and an article body, tokenised as a pair; is the
headline the body's own (``match``) or another article's (``mismatch``)?"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

import lccore
from lccore.data import read_records

#: The label order of the model's outputs: logit 1 is "match".
LABELS = ("mismatch", "match")


@attrs.frozen
class Example:
    headline: str
    body: str
    label: str | None  # "match", "mismatch", or None for a prediction input
    where: str  # "file:line" or "input N": every error names it


class HeadlineMatchTask(lccore.Task):
    default_head = "headline_body_head"
    metric = "accuracy"
    metric_names = ("accuracy", "f1_match")

    # --- reading -----------------------------------------------------------------------------

    def read(self, path):
        # read_records parses JSONL (or CSV) and names file:line for a malformed row or a missing key
        for where, row in read_records(path, required=("headline", "body", "label")):
            yield self._example(row, where, labelled=True)

    def parse_input(self, value, where):
        if not isinstance(value, dict):
            raise lccore.DataError(f"{where}: headline_match takes an object with strings 'headline' and 'body', got {_kind(value)}")
        # {"text": ..., "text_pair": ...}, the generic names of a pair's two texts (`lccore explain
        # --text A --text-pair B` passes them), is read as headline and body too
        keys = ("text", "text_pair") if "text" in value and not {"headline", "body"} & set(value) else ("headline", "body")
        return self._example(value, where, labelled=False, keys=keys)

    def _example(self, row: dict, where: str, *, labelled: bool, keys: tuple[str, str] = ("headline", "body")) -> Example:
        for key in keys:
            if key not in row:
                raise lccore.DataError(f"{where}: missing key '{key}' (expected an object with strings '{keys[0]}' and '{keys[1]}')")
            if not isinstance(row[key], str):
                raise lccore.DataError(f"{where}: '{key}' must be a string, got {_kind(row[key])}")
        label = row.get("label")
        if label is not None or labelled:
            label = _label(label, where)
        return Example(row[keys[0]], row[keys[1]], label, where)

    # --- the label space -----------------------------------------------------------------------

    def fit(self, examples) -> None:
        seen, first = set(), None
        for example in examples:
            first = first or example
            seen.add(example.label)
            if len(seen) == len(LABELS):
                return
        where = first.where.rsplit(":", 1)[0] if first is not None else "training data"
        raise lccore.DataError(f"{where}: training data needs both labels, 'match' and 'mismatch'; found only {', '.join(sorted(seen)) or 'none'}")

    def head_spec(self) -> dict:
        return {"labels": list(LABELS)}

    def restore(self, spec: dict) -> None:
        if list(spec.get("labels", ())) != list(LABELS):
            raise lccore.ConfigError(f"headline_match: the saved head predicts {spec.get('labels')}, not {list(LABELS)}")

    # --- model input and output ----------------------------------------------------------------

    def encode(self, examples, tokenizer, max_length):
        # One pair per example: [CLS] headline [SEP] body [SEP] on a BERT, with token_type_ids 0 then 1.
        # "longest_first" cuts the longer text first: a long body never crowds out the headline.
        encoded = tokenizer([e.headline for e in examples], [e.body for e in examples], truncation="longest_first", max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            feature = {key: values[i] for key, values in encoded.items()}
            if example.label is not None:
                feature["labels"] = LABELS.index(example.label)
            features.append(feature)
        return features

    def decode(self, outputs, batch, features):
        import torch

        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [{"label": LABELS[i], "score": round(float(s), 6)} for i, s in zip(indices.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return MatchCounts(self)

    # --- texts, for ethics policies and explainers ----------------------------------------------

    def texts_of(self, example):
        # the field names lccore's explanation records use for a pair: "text" and "text_pair"
        return {"text": example.headline, "text_pair": example.body}

    def with_texts(self, example, texts):
        return attrs.evolve(example, headline=texts.get("text", example.headline), body=texts.get("text_pair", example.body))

    # --- sample data for the conformance kit and `lccore new-plugin` users -------------------------

    def example_data(self, directory):
        rows = [
            ("alice visited paris", "alice went to paris today with bob", "match"),
            ("bob works in london", "bob works at the show in london", "match"),
            ("carol met dave", "carol met dave in rome today", "match"),
            ("a great film", "the film was great and the acting superb", "match"),
            ("alice visited paris", "the meal was quite dreadful", "mismatch"),
            ("bob works in london", "a boring book with a dull plot", "mismatch"),
            ("carol met dave", "erin lives in new york", "mismatch"),
            ("a great film", "dave went to rome", "mismatch"),
        ]
        text = "".join(json.dumps({"headline": h, "body": b, "label": label}) + "\n" for h, b, label in rows)
        paths = {}
        for split in ("train", "dev"):
            paths[split] = Path(directory) / f"{split}.jsonl"
            paths[split].write_text(text, encoding="utf-8")
        return paths


class MatchCounts(lccore.MetricsAccumulator):
    """Four counts, whatever the size of the evaluation file: ``lccore evaluate`` streams through it."""

    def __init__(self, task):
        super().__init__(task)
        self.total = self.correct = self.true_match = self.predicted_match = self.gold_match = 0

    def update(self, predictions, examples):
        for prediction, example in zip(predictions, examples, strict=True):
            if example.label is None:
                raise lccore.DataError(f"{example.where}: scoring needs a 'label'")
            gold, predicted = example.label == "match", prediction["label"] == "match"
            self.total += 1
            self.correct += gold == predicted
            self.gold_match += gold
            self.predicted_match += predicted
            self.true_match += gold and predicted

    def compute(self):
        wanted = self.gold_match + self.predicted_match
        return {
            "accuracy": self.correct / self.total if self.total else 0.0,
            "f1_match": 2 * self.true_match / wanted if wanted else 0.0,
        }


def _label(value, where: str) -> str:
    """``"match"`` or ``"mismatch"`` from what a row says: those names (any case: a CSV cell too) or
    a JSON boolean, ``true`` for a match."""
    if isinstance(value, bool):
        return LABELS[value]
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return value.strip().lower()
    raise lccore.DataError(f"{where}: 'label' must be \"match\" or \"mismatch\" (or true / false), got {json.dumps(value)}")


def _kind(value) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
