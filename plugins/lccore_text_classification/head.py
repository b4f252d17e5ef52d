"""The `sequence_classifier` head: the model's own sequence-classification layer (a linear layer
over the pooled representation), so the saved model loads with
`transformers.AutoModelForSequenceClassification`. Its loss follows `task.label_type`:
cross-entropy (single), binary cross-entropy on each label's logit (multi), squared error on one
output (regression); transformers picks it from the config's `problem_type`, which the saved
model keeps."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification

import lccore

PROBLEM_TYPES = {"single": "single_label_classification", "multi": "multi_label_classification", "regression": "regression"}


class SequenceClassifierHead(lccore.Head):
    def build(self, model, spec):
        label_type = spec.get("label_type", "single")  # runs saved before label types were single-label
        labels = spec["labels"]
        named = {} if label_type == "regression" else {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
        return AutoModelForSequenceClassification.from_pretrained(
            model,
            num_labels=1 if label_type == "regression" else len(labels),
            problem_type=PROBLEM_TYPES[label_type],
            **named,
        )

    def load(self, model_dir):
        return AutoModelForSequenceClassification.from_pretrained(model_dir)
