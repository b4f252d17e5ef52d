"""The `span_qa` head: the model's own question-answering layer (start and end logits), so the
saved model loads with `transformers.AutoModelForQuestionAnswering`."""

from __future__ import annotations

import torch
from transformers import AutoModelForQuestionAnswering

import lccore


class SpanQAHead(lccore.Head):
    def build(self, model, spec):
        return AutoModelForQuestionAnswering.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForQuestionAnswering.from_pretrained(model_dir)

    def loss(self, outputs, batch):
        """The model's loss, or with label smoothing the same mean of start and end cross-entropies,
        smoothed."""
        if self.label_smoothing <= 0 or "start_positions" not in batch:
            return outputs.loss
        start = self._smoothed(outputs.start_logits, batch["start_positions"])
        end = self._smoothed(outputs.end_logits, batch["end_positions"])
        return (start + end) / 2

    def _smoothed(self, logits, positions):
        # As the model's own loss does: a position outside the sequence is clamped to one past its
        # end, and that index is ignored.
        outside = logits.shape[1]
        positions = positions.view(-1).clamp(0, outside)
        return torch.nn.functional.cross_entropy(logits.float(), positions, ignore_index=outside, label_smoothing=self.label_smoothing)
