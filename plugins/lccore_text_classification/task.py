"""The `text_classification` task."""

from __future__ import annotations

import attrs
import torch

import lccore
from lccore.data import read_records


@attrs.frozen
class Example:
    text: str
    label: str | None
    where: str


class TextClassificationTask(lccore.Task):
    default_head = "sequence_classifier"
    metric = "accuracy"
    metric_names = ("accuracy", "f1_macro")

    def __init__(self, options):
        self.options = options
        self.labels: list[str] = list(options.labels or [])

    def default_head_for(self, origin: dict) -> str | None:
        # Masked-LM pretraining alone never trains [CLS] (nor a pooler): sequence_classifier would
        # read noise (0.48 accuracy on two classes); the mean of the token states is what it learnt.
        if origin.get("components", {}).get("task", {}).get("name") == "mlm":
            return "mean_pooled_classifier"
        return None

    def read(self, path):
        # A generator: the training split is read in passes, so a file of any size streams.
        text_key, label_key = self.options.text_field, self.options.label_field
        for where, row in read_records(path, required=(text_key, label_key)):
            text, label = row[text_key], row[label_key]
            if not isinstance(text, str):
                raise lccore.DataError(f"{where}: '{text_key}' must be a string, got {type(text).__name__}")
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise lccore.DataError(f"{where}: '{label_key}' must be a string or an integer, got {label!r}")
            yield Example(text, str(label), where)

    def fit(self, examples) -> None:
        found = sorted({e.label for e in examples})
        if not self.labels:
            self.labels = found
        unknown = [label for label in found if label not in self.labels]
        if unknown:
            first = next(e for e in examples if e.label == unknown[0])
            raise lccore.DataError(f"{first.where}: label '{unknown[0]}' is not in task.labels ({', '.join(self.labels)})")
        if len(self.labels) < 2:
            raise lccore.DataError(f"{examples[0].where.rsplit(':', 1)[0]}: training data needs at least 2 labels, found {len(self.labels)}")

    def head_spec(self) -> dict:
        return {"labels": list(self.labels)}

    def restore(self, spec: dict) -> None:
        self.labels = list(spec["labels"])

    def encode(self, examples, tokenizer, max_length):
        index = {label: i for i, label in enumerate(self.labels)}
        encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            feature = {key: values[i] for key, values in encoded.items()}
            if example.label is not None:
                if example.label not in index:
                    raise lccore.DataError(
                        f"{example.where}: label '{example.label}' was not seen in training (known: {', '.join(self.labels)})"
                    )
                feature["labels"] = index[example.label]
            features.append(feature)
        return features

    def decode(self, outputs, batch, features):
        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [{"label": self.labels[i], "score": round(float(s), 6)} for i, s in zip(indices.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return LabelPairs(self)

    def example_data(self, directory):
        import json
        from pathlib import Path

        rows = [
            ("the film was great", "positive"), ("a wonderful book", "positive"), ("really lovely acting", "positive"),
            ("the plot was awful", "negative"), ("a boring show", "negative"), ("quite dreadful meal", "negative"),
        ]
        text_key, label_key = self.options.text_field, self.options.label_field
        paths = {}
        for split in ("train", "dev"):
            path = Path(directory) / f"{split}.jsonl"
            path.write_text("".join(json.dumps({text_key: t, label_key: l}) + "\n" for t, l in rows), encoding="utf-8")
            paths[split] = path
        return paths

    def with_texts(self, example, texts):
        return attrs.evolve(example, **texts)

    def parse_input(self, value, where):
        if isinstance(value, str):
            return Example(value, None, where)
        if isinstance(value, dict) and isinstance(value.get(self.options.text_field), str):
            label = value.get(self.options.label_field)
            return Example(value[self.options.text_field], None if label is None else str(label), where)
        raise lccore.DataError(f"{where}: expected a string or an object with a string '{self.options.text_field}'")


class LabelPairs(lccore.MetricsAccumulator):
    """Gold and predicted labels as small integers (4 bytes a row, not the examples): what
    accuracy and macro F1 need, for an evaluation file of any size."""

    def __init__(self, task):
        super().__init__(task)
        from array import array

        self.names: dict[str, int] = {label: index for index, label in enumerate(task.labels)}
        self.gold, self.predicted = array("i"), array("i")

    def _index(self, label) -> int:
        return self.names.setdefault(label, len(self.names))

    def update(self, predictions, examples):
        self.gold.extend(self._index(e.label) for e in examples)
        self.predicted.extend(self._index(p["label"]) for p in predictions)

    def compute(self):
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        gold, predicted = np.frombuffer(self.gold, dtype=np.int32), np.frombuffer(self.predicted, dtype=np.int32)
        labels = [self.names[label] for label in self.task.labels]
        return {
            "accuracy": float(accuracy_score(gold, predicted)),
            "f1_macro": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        }
