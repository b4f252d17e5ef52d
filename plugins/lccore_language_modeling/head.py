"""The `masked_lm` and `causal_lm` heads: the model's own language-modelling head."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

import lccore


def scored_loss(outputs, batch, shift: int = 0):
    """The model's loss, or a zero that still reaches every logit when the batch scores no token
    (a batch of short blocks in which masking chose none: the mean over nothing is NaN)."""
    labels = batch.get("labels")
    if labels is not None and not bool((labels[:, shift:] != -100).any()):
        return outputs.logits.sum() * 0.0
    return outputs.loss


class MaskedLMHead(lccore.Head):
    supports_label_smoothing = False

    def loss(self, outputs, batch):
        return scored_loss(outputs, batch)

    def build(self, model, spec):
        return AutoModelForMaskedLM.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForMaskedLM.from_pretrained(model_dir)


class CausalLMHead(lccore.Head):
    supports_label_smoothing = False

    def loss(self, outputs, batch):
        return scored_loss(outputs, batch, shift=1)  # the first token of a block is never predicted

    def build(self, model, spec):
        return AutoModelForCausalLM.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForCausalLM.from_pretrained(model_dir)
