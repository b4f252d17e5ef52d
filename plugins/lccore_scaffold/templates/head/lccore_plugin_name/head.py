"""The `plugin_name` head: the mean of the encoder's token representations (padding left out), then
dropout and a linear layer with one logit per label of the task's ``head_spec()["labels"]``.

``lccore.heads.BackboneWithHead`` saves it as a Hugging Face encoder folder (it loads with
``transformers.AutoModel``) plus ``head.safetensors`` (the layers below) and ``head.json`` (the
labels), loads it back, and gives the fine-tuning controls what they read (``config``, the layers).
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore
from lccore.heads import BackboneWithHead


class MeanPooledClassifier(BackboneWithHead):
    def __init__(self, backbone, settings):
        super().__init__(backbone, settings)
        self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(backbone.config.hidden_size, len(settings["labels"]))

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PluginNameHead(lccore.Head):
    def build(self, model, spec):
        if "labels" not in spec:
            raise lccore.ConfigError("head.name: 'plugin_name' needs a task whose head_spec() lists 'labels' (e.g. text_classification)")
        return MeanPooledClassifier.from_backbone(model, {"labels": spec["labels"]})

    def load(self, model_dir):
        return MeanPooledClassifier.load(model_dir)
