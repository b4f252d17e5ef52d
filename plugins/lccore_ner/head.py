"""The `token_classifier` head: the model's own token-classification layer, so the saved model
loads with `transformers.AutoModelForTokenClassification`."""

from __future__ import annotations

from transformers import AutoModelForTokenClassification

import lccore


class TokenClassifierHead(lccore.Head):
    def build(self, model, spec):
        labels = spec["labels"]
        return AutoModelForTokenClassification.from_pretrained(
            model,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )

    def load(self, model_dir):
        return AutoModelForTokenClassification.from_pretrained(model_dir)
