"""The `sequence_classifier` head: the model's own sequence-classification layer (a linear layer
over the pooled representation with cross-entropy), so the saved model loads with
`transformers.AutoModelForSequenceClassification`."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification

import lccore


class SequenceClassifierHead(lccore.Head):
    def build(self, model, spec):
        labels = spec["labels"]
        return AutoModelForSequenceClassification.from_pretrained(
            model,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )

    def load(self, model_dir):
        return AutoModelForSequenceClassification.from_pretrained(model_dir)
