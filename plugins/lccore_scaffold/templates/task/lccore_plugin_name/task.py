"""The `plugin_name` task: JSONL {"text": ..., "label": ...} rows, one label per text."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

import lccore
from lccore.data import read_records


@attrs.frozen
class Example:
    text: str
    label: str | None
    where: str


class PluginNameTask(lccore.Task):
    # The first-party `sequence_classifier` head builds the output layer: no head to write.
    default_head = "sequence_classifier"
    metric = "accuracy"
    metric_names = ("accuracy",)

    def __init__(self, options):
        self.options = options
        self.labels: list[str] = []

    def read(self, path):
        # A generator: lccore reads the training split in passes, so a file of any size streams.
        text_key, label_key = self.options.text_field, self.options.label_field
        for where, row in read_records(path, required=(text_key, label_key)):
            if not isinstance(row[text_key], str):
                raise lccore.DataError(f"{where}: '{text_key}' must be a string")
            yield Example(row[text_key], str(row[label_key]), where)

    def fit(self, examples):
        # `examples` reads the training files again on each pass: one pass here.
        self.labels = sorted({e.label for e in examples})
        if len(self.labels) < 2:
            raise lccore.DataError(f"training data needs at least 2 labels, found {len(self.labels)}")

    def head_spec(self):
        return {"labels": list(self.labels)}

    def restore(self, spec):
        self.labels = list(spec["labels"])

    def encode(self, examples, tokenizer, max_length):
        index = {label: i for i, label in enumerate(self.labels)}
        encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            feature = {key: values[i] for key, values in encoded.items()}
            if example.label is not None:
                if example.label not in index:
                    raise lccore.DataError(f"{example.where}: label '{example.label}' was not seen in training")
                feature["labels"] = index[example.label]
            features.append(feature)
        return features

    def decode(self, outputs, batch, features):
        import torch

        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [{"label": self.labels[i], "score": round(float(s), 6)} for i, s in zip(indices.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        correct = sum(p["label"] == e.label for p, e in zip(predictions, examples))
        return {"accuracy": correct / max(len(examples), 1)}

    def parse_input(self, value, where):
        if isinstance(value, str):
            return Example(value, None, where)
        if isinstance(value, dict) and isinstance(value.get(self.options.text_field), str):
            label = value.get(self.options.label_field)
            return Example(value[self.options.text_field], None if label is None else str(label), where)
        raise lccore.DataError(f"{where}: expected a string or an object with a string '{self.options.text_field}'")

    def example_data(self, directory):
        # A few rows in the format read() accepts: lccore.testing.check_plugin round-trips them.
        rows = [("the film was great", "yes"), ("a wonderful book", "yes"), ("a boring show", "no"), ("the plot was awful", "no")]
        path = Path(directory) / "train.jsonl"
        text_key, label_key = self.options.text_field, self.options.label_field
        path.write_text("".join(json.dumps({text_key: t, label_key: l}) + "\n" for t, l in rows), encoding="utf-8")
        return {"train": path}
