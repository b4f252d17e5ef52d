"""The `mean_pooled_classifier` head: a linear layer over the mean of the token states.

`sequence_classifier` reads the first token ([CLS]) through the model's pooler. An encoder
pretrained with masked LM alone (`lccore pretrain`, RoBERTa-style, no next-sentence task) never
trains that token's output: it comes out nearly the same for every input, and a classifier on it
learns slowly or not at all. The mean of the token states, which masked LM does train, carries
the sentence. The run saves the encoder as a plain Hugging Face model (`AutoModel` loads it)
beside `classifier.safetensors` and `classifier.json`."""

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
        self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(backbone.config.hidden_size, len(self.labels))

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MeanPooledClassifierHead(lccore.Head):
    def build(self, model, spec):
        return MeanPooledClassifier.from_backbone(model, {"labels": spec["labels"]}, add_pooling_layer=False)

    def load(self, model_dir):
        return MeanPooledClassifier.load(model_dir, add_pooling_layer=False)
