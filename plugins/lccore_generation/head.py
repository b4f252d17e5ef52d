"""The `generative_lm` and `seq2seq_lm` heads: the model's own language-modelling head, so the
saved model loads with plain `AutoModelForSeq2SeqLM` / `AutoModelForCausalLM`.

Label smoothing is honoured: a smoothed cross-entropy of the logits against the labels, shifted
by one position for a decoder-only model (its logits at t predict token t + 1; an encoder-decoder's
logits and labels line up already)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import lccore

from .generation import model_is_encoder_decoder


class GenerativeLMHead(lccore.Head):
    """AutoModelForSeq2SeqLM for an encoder-decoder config, else AutoModelForCausalLM."""

    def __init__(self):
        self.encoder_decoder = False

    def build(self, model, spec):
        return self._load(model, spec)

    def load(self, model_dir):
        return self._load(model_dir, {})

    def _load(self, source, spec):
        self.encoder_decoder = model_is_encoder_decoder(source)
        if self.encoder_decoder and spec.get("decoder_only"):
            raise lccore.ConfigError(f"model: '{source}' is an encoder-decoder; this task fine-tunes a decoder-only (causal LM) model")
        return (AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM).from_pretrained(source)

    def loss(self, outputs, batch):
        logits = getattr(outputs, "logits", None)
        if self.label_smoothing <= 0 or logits is None or "labels" not in batch:
            return outputs.loss
        labels = batch["labels"]
        if not self.encoder_decoder:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, label_smoothing=self.label_smoothing
        )


class Seq2SeqLMHead(GenerativeLMHead):
    """An encoder-decoder's LM head only (T5, BART, ...)."""

    def _load(self, source, spec):
        if spec.get("decoder_only"):
            raise lccore.ConfigError("head.name: seq2seq_lm builds an encoder-decoder model; this task needs a decoder-only one (use generative_lm)")
        if not model_is_encoder_decoder(source):
            raise lccore.ConfigError(f"head.name: seq2seq_lm needs an encoder-decoder model; '{source}' is decoder-only (use generative_lm)")
        self.encoder_decoder = True
        return AutoModelForSeq2SeqLM.from_pretrained(source)
