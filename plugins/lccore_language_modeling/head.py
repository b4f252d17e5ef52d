"""The `masked_lm` and `causal_lm` heads: the model's own language-modelling head."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

import lccore


class MaskedLMHead(lccore.Head):
    supports_label_smoothing = False

    def build(self, model, spec):
        return AutoModelForMaskedLM.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForMaskedLM.from_pretrained(model_dir)


class CausalLMHead(lccore.Head):
    supports_label_smoothing = False

    def build(self, model, spec):
        return AutoModelForCausalLM.from_pretrained(model)

    def load(self, model_dir):
        return AutoModelForCausalLM.from_pretrained(model_dir)
