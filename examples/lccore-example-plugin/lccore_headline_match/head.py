"""The `headline_body_head` head: a model of its own, not a Hugging Face ``*ForXxx`` class.

The encoder reads the pair as one sequence (``[CLS] headline [SEP] body [SEP]``), so its states
already mix the two texts. The head then mean-pools the headline's tokens (segment 0) and the
body's (segment 1) apart, and a small MLP compares the two vectors through
``[h, b, h * b, |h - b|]``: the product and the difference are what "same topic" looks like.

:class:`lccore.heads.BackboneWithHead` does the rest: ``config``, the backbone among the modules
(freezing, layer-wise learning rates, LoRA find it), and saving as a plain Hugging Face folder
plus ``head.safetensors`` and ``head.json``.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore
from lccore.heads import BackboneWithHead


class HeadlineBodyModel(BackboneWithHead):
    def __init__(self, backbone, settings: dict):
        super().__init__(backbone, settings)
        width = backbone.config.hidden_size
        self.compare = torch.nn.Sequential(
            torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1)),
            torch.nn.Linear(4 * width, width),
            torch.nn.GELU(),
            torch.nn.Linear(width, len(settings["labels"])),
        )

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        if token_type_ids is None:
            raise lccore.ConfigError("headline_body_head: the batch has no token_type_ids; it needs a tokenizer that marks the two texts of a pair (BERT-style)")
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        present = attention_mask.bool()
        headline = self._mean(states, present & (token_type_ids == 0))
        body = self._mean(states, present & (token_type_ids == 1))
        logits = self.compare(torch.cat([headline, body, headline * body, (headline - body).abs()], dim=-1))
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @staticmethod
    def _mean(states, mask):
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # an empty segment pools to zeros


class HeadlineBodyHead(lccore.Head):
    # Head.loss, inherited, takes the model's cross-entropy (or, with train.label_smoothing, a smoothed one of the logits).

    def build(self, model, spec):
        return HeadlineBodyModel.from_backbone(model, {"labels": list(spec["labels"])}, **_backbone_options(model))

    def load(self, model_dir):
        return HeadlineBodyModel.load(model_dir, **_backbone_options(model_dir))


def _backbone_options(model) -> dict:
    """What ``AutoModel.from_pretrained`` gets for ``model``, once it is known to have segments."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    # A ConfigError is the contract's way to refuse a backbone (the kit then tries its next tiny model).
    if getattr(config, "type_vocab_size", 0) < 2 or getattr(config, "is_encoder_decoder", False):
        raise lccore.ConfigError(f"head headline_body_head: '{model}' is a {config.model_type} without segment embeddings; "
                                 "it needs a BERT-style encoder, whose tokenizer marks the headline and the body of a pair")
    # BERT's pooler (a dense layer over [CLS]) would go unused: leave it out
    return {"add_pooling_layer": False} if config.model_type == "bert" else {}
