"""The `mean_pooled_classifier` head: a linear layer over the mean of the token states.

`sequence_classifier` reads the first token ([CLS]) through the model's pooler. An encoder
pretrained with masked LM alone (`lccore pretrain`, RoBERTa-style, no next-sentence task) never
trains that token's output: it comes out nearly the same for every input, and a classifier on it
learns slowly or not at all. The mean of the token states, which masked LM does train, carries
the sentence. The run saves the encoder as a plain Hugging Face model (`AutoModel` loads it)
beside `classifier.safetensors` and `classifier.json`. The loss follows `task.label_type`, which
`classifier.json` records (a head saved before it existed is single-label)."""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore
from lccore.heads import BackboneWithHead


class MeanPooledClassifier(BackboneWithHead):
    # the file names runs written before lccore.heads existed use
    WEIGHTS_FILE, SETTINGS_FILE = "classifier.safetensors", "classifier.json"

    def __init__(self, backbone, settings: dict):
        super().__init__(backbone, settings)
        self.labels = list(settings["labels"])
        self.label_type = settings.get("label_type", "single")
        self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        outputs = 1 if self.label_type == "regression" else len(self.labels)
        self.classifier = torch.nn.Linear(backbone.config.hidden_size, outputs)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        return SequenceClassifierOutput(loss=None if labels is None else self.loss_of(logits.float(), labels), logits=logits)

    def loss_of(self, logits, labels):
        if self.label_type == "regression":
            return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        if self.label_type == "multi":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return torch.nn.functional.cross_entropy(logits, labels)


class MeanPooledClassifierHead(lccore.Head):
    def build(self, model, spec):
        return MeanPooledClassifier.from_backbone(model, {"labels": spec["labels"], "label_type": spec.get("label_type", "single")}, add_pooling_layer=False)

    def load(self, model_dir):
        return MeanPooledClassifier.load(model_dir, add_pooling_layer=False)
