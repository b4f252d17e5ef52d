"""The `text_classification` task: one text or a pair of texts, with one label (`single`), any
number of labels (`multi`) or a number (`regression`) each."""

from __future__ import annotations

import math

import attrs
import torch

import lccore
from lccore.data import clip_text, read_records

#: The metrics of each label type, the main one first.
METRICS = {
    "single": ("accuracy", "f1_macro"),
    "multi": ("f1_micro", "f1_macro", "exact_match"),
    # pearson leads, not mse: early stopping and the best checkpoint take higher as better
    "regression": ("pearson", "spearman", "mse"),
}


@attrs.frozen
class Example:
    text: str
    label: str | tuple[str, ...] | float | None  # by label_type: a name, the names (multi), a number
    where: str
    text_pair: str | None = None


class TextClassificationTask(lccore.Task):
    default_head = "sequence_classifier"

    def __init__(self, options):
        self.options = options
        self.label_type: str = options.label_type
        self.labels: list[str] = list(options.labels or [])
        self.metric_names = METRICS[self.label_type]
        self.metric = self.metric_names[0]
        self.lower_is_better = ("mse",) if self.label_type == "regression" else ()
        # Smoothing spreads probability over exclusive classes: nothing of the kind for a number or independent labels.
        self.supports_label_smoothing = self.label_type == "single"

    def default_head_for(self, origin: dict) -> str | None:
        # Masked-LM pretraining alone never trains [CLS] (nor a pooler): sequence_classifier would
        # read noise (0.48 accuracy on two classes); the mean of the token states is what it learnt.
        if origin.get("components", {}).get("task", {}).get("name") == "mlm":
            return "mean_pooled_classifier"
        return None

    def read(self, path):
        # A generator: the training split is read in passes, so a file of any size streams.
        text_key, pair_key, label_key = self.options.text_field, self.options.text_pair_field, self.options.label_field
        required = (text_key, label_key) if pair_key is None else (text_key, pair_key, label_key)
        for where, row in read_records(path, required=required):
            text = row[text_key]
            if not isinstance(text, str):
                raise lccore.DataError(f"{where}: '{text_key}' must be a string, got {type(text).__name__}")
            pair = None
            if pair_key is not None:
                pair = row[pair_key]
                if not isinstance(pair, str):
                    raise lccore.DataError(f"{where}: '{pair_key}' must be a string, got {type(pair).__name__}")
            yield Example(text, self._label(row[label_key], where), where, pair)

    def _label(self, value, where: str):
        """A label of the file as the example keeps it, or a DataError naming ``where``."""
        key = self.options.label_field
        if self.label_type == "regression":
            number = value
            if isinstance(value, str):  # a CSV cell is text
                try:
                    number = float(value)
                except ValueError:
                    pass
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise lccore.DataError(f"{where}: '{key}' must be a finite number, got {value!r}")
            return float(number)
        if self.label_type == "multi":
            if isinstance(value, str):  # CSV (or a JSON string): "a;b"; "" is no label
                value = [part.strip() for part in value.split(";") if part.strip()]
            if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in value):
                raise lccore.DataError(f"{where}: '{key}' must be a list of strings or integers (in CSV: labels separated by ';'), got {value!r}")
            return tuple(sorted({str(v) for v in value}))
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise lccore.DataError(f"{where}: '{key}' must be a string or an integer, got {value!r}")
        return str(value)

    def fit(self, examples) -> None:
        if self.label_type == "regression":
            return  # a number has no label set to learn
        names_of = (lambda e: e.label) if self.label_type == "multi" else (lambda e: (e.label,))
        found = sorted({name for e in examples for name in names_of(e)})
        if not self.labels:
            self.labels = found
        unknown = [label for label in found if label not in self.labels]
        if unknown:
            first = next(e for e in examples if unknown[0] in names_of(e))
            raise lccore.DataError(f"{first.where}: label '{unknown[0]}' is not in task.labels ({', '.join(self.labels)})")
        # one label is a classifier of its own when labels are independent (multi); one class is not
        needed = 1 if self.label_type == "multi" else 2
        if len(self.labels) < needed:
            first = next(iter(examples), None)
            where = first.where.rsplit(":", 1)[0] if first is not None else "training data"
            raise lccore.DataError(f"{where}: training data needs at least {needed} label{'s' * (needed > 1)}, found {len(self.labels)}")

    def head_spec(self) -> dict:
        return {"labels": list(self.labels), "label_type": self.label_type}

    def restore(self, spec: dict) -> None:
        label_type = spec.get("label_type", "single")  # runs saved before label types were single-label
        if label_type != self.label_type:
            raise lccore.ConfigError(f"task.label_type: '{self.label_type}', but the saved head was trained for '{label_type}'")
        self.labels = list(spec["labels"])

    def encode(self, examples, tokenizer, max_length):
        # Clipped first: the tokenizer encodes a whole text before truncating it (a long document's memory).
        texts = [clip_text(e.text, max_length) for e in examples]
        if self.options.text_pair_field is None:
            encoded = tokenizer(texts, truncation=True, max_length=max_length)
        else:
            # cut the longer text first, so that a long passage does not crowd out the question
            encoded = tokenizer(texts, [clip_text(e.text_pair, max_length) for e in examples], truncation="longest_first", max_length=max_length)
        index = {label: i for i, label in enumerate(self.labels)}
        features = []
        for i, example in enumerate(examples):
            feature = {key: values[i] for key, values in encoded.items()}
            if example.label is not None:
                feature["labels"] = self._target(example, index)
            features.append(feature)
        return features

    def _target(self, example, index: dict):
        """The model's ``labels`` for an example: a class index, a float, or a row of 0/1 floats."""
        if self.label_type == "regression":
            return float(example.label)  # a float, so that the collated tensor is one (MSE needs it)
        names = example.label if self.label_type == "multi" else (example.label,)
        unknown = [name for name in names if name not in index]
        if unknown:
            raise lccore.DataError(f"{example.where}: label '{unknown[0]}' was not seen in training (known: {', '.join(self.labels)})")
        if self.label_type == "single":
            return index[example.label]
        row = [0.0] * len(self.labels)
        for name in names:
            row[index[name]] = 1.0
        return row

    def decode(self, outputs, batch, features):
        logits = outputs.logits.float()
        if self.label_type == "regression":
            return [{"value": round(float(v), 6)} for v in logits[:, 0].tolist()]
        if self.label_type == "multi":
            records = []
            for row in torch.sigmoid(logits).tolist():
                records.append({
                    "labels": [name for name, p in zip(self.labels, row) if p >= self.options.threshold],
                    "scores": {name: round(p, 6) for name, p in zip(self.labels, row)},
                })
            return records
        probabilities = torch.softmax(logits, dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [{"label": self.labels[i], "score": round(float(s), 6)} for i, s in zip(indices.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return {"single": LabelPairs, "multi": LabelSets, "regression": ValuePairs}[self.label_type](self)

    def example_data(self, directory):
        import json
        from pathlib import Path

        options = self.options
        # (text, second text, single label, labels, score): the columns each option set needs
        rows = [
            ("the film was great", "a wonderful film", "positive", ["acting", "plot"], 4.5),
            ("a wonderful book", "the book was awful", "positive", ["plot"], 1.0),
            ("really lovely acting", "really lovely acting", "positive", ["acting"], 5.0),
            ("the plot was awful", "a boring show", "negative", [], 3.5),
            ("a boring show", "quite dreadful meal", "negative", ["acting", "plot"], 0.5),
            ("quite dreadful meal", "the film was great", "negative", ["plot"], 0.0),
        ]
        records = []
        for text, pair, label, labels, score in rows:
            record = {options.text_field: text, options.label_field: {"single": label, "multi": labels, "regression": score}[self.label_type]}
            if options.text_pair_field is not None:
                record[options.text_pair_field] = pair
            records.append(record)
        paths = {}
        for split in ("train", "dev"):
            path = Path(directory) / f"{split}.jsonl"
            path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
            paths[split] = path
        return paths

    def texts_of(self, example):
        texts = {"text": example.text}
        if example.text_pair is not None:
            texts["text_pair"] = example.text_pair
        return texts

    def with_texts(self, example, texts):
        return attrs.evolve(example, **texts)

    def parse_input(self, value, where):
        text_key, pair_key = self.options.text_field, self.options.text_pair_field
        if isinstance(value, str) and pair_key is None:
            return Example(value, None, where)
        if isinstance(value, dict) and pair_key and "text_pair" in value and pair_key not in value:
            # the generic pair spelling ({"text", "text_pair"}: `lccore explain --text-pair`,
            # the HTTP API, programs written for any pair run) for a run whose fields are named
            # otherwise (sentence1/sentence2); with the run's own names present, those count
            value = {**{k: v for k, v in value.items() if k not in ("text", "text_pair")},
                     text_key: value.get(text_key, value.get("text")), pair_key: value["text_pair"]}
        wanted = f"an object with strings '{text_key}' and '{pair_key}'" if pair_key else f"a string or an object with a string '{text_key}'"
        if not isinstance(value, dict):
            given = "a string: this task takes text pairs" if isinstance(value, str) else type(value).__name__
            raise lccore.DataError(f"{where}: expected {wanted}, got {given}")
        for key in (text_key,) if pair_key is None else (text_key, pair_key):
            if not isinstance(value.get(key), str):
                problem = "is missing" if key not in value else f"is a {type(value[key]).__name__}"
                raise lccore.DataError(f"{where}: expected {wanted}; '{key}' {problem}")
        label = value.get(self.options.label_field)
        return Example(value[text_key], None if label is None else self._label(label, where), where,
                       value[pair_key] if pair_key is not None else None)


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


class LabelSets(lccore.MetricsAccumulator):
    """Gold and predicted label sets as rows of a 0/1 matrix, one byte a label (`multi`)."""

    def __init__(self, task):
        super().__init__(task)
        self.index = {label: i for i, label in enumerate(task.labels)}
        self.gold, self.predicted = bytearray(), bytearray()

    def _row(self, names, where) -> bytes:
        row = bytearray(len(self.index))
        for name in names:
            if name not in self.index:
                raise lccore.DataError(f"{where}: label '{name}' was not seen in training (known: {', '.join(self.task.labels)})")
            row[self.index[name]] = 1
        return bytes(row)

    def update(self, predictions, examples):
        for prediction, example in zip(predictions, examples):
            self.gold += self._row(example.label, example.where)
            self.predicted += self._row(prediction["labels"], example.where)

    def compute(self):
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        width = len(self.index)
        gold = np.frombuffer(bytes(self.gold), dtype=np.uint8).reshape(-1, width)
        predicted = np.frombuffer(bytes(self.predicted), dtype=np.uint8).reshape(-1, width)
        return {
            "f1_micro": float(f1_score(gold, predicted, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(gold, predicted, average="macro", zero_division=0)),
            "exact_match": float(accuracy_score(gold, predicted)),  # every label of the text right
        }


class ValuePairs(lccore.MetricsAccumulator):
    """Gold and predicted numbers, 8 bytes each (`regression`)."""

    def __init__(self, task):
        super().__init__(task)
        from array import array

        self.gold, self.predicted = array("d"), array("d")

    def update(self, predictions, examples):
        self.gold.extend(e.label for e in examples)
        self.predicted.extend(p["value"] for p in predictions)

    def compute(self):
        import warnings

        import numpy as np
        from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

        gold, predicted = np.frombuffer(self.gold, dtype=np.float64), np.frombuffer(self.predicted, dtype=np.float64)

        def correlation(function) -> float:
            # undefined for fewer than 2 texts or a constant side (an untrained model's output can be):
            # 0, no correlation shown, rather than a NaN that early stopping could never compare
            if len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(predicted) == 0:
                return 0.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConstantInputWarning)
                value = float(function(gold, predicted)[0])
            return value if math.isfinite(value) else 0.0

        return {
            "pearson": correlation(pearsonr),
            "spearman": correlation(spearmanr),
            "mse": float(np.mean((gold - predicted) ** 2)) if len(gold) else 0.0,
        }
