"""The `span_qa` head: the model's own question-answering layer (start and end logits), so the
saved model loads with `transformers.AutoModelForQuestionAnswering`."""

from __future__ import annotations

from transformers import AutoModelForQuestionAnswering

import lccore


class SpanQAHead(lccore.Head):
    def build(self, model, spec):
        return AutoModelForQuestionAnswering.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForQuestionAnswering.from_pretrained(model_dir)
