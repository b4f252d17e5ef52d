"""The `mean_pooled_classifier` head: a linear layer over the mean of the token states.

`sequence_classifier` reads the first token ([CLS]) through the model's pooler. An encoder
pretrained with masked LM alone (`lccore pretrain`, RoBERTa-style, no next-sentence task) never
trains that token's output: it comes out nearly the same for every input, and a classifier on it
learns slowly or not at all. The mean of the token states, which masked LM does train, carries
the sentence. The run saves the encoder as a plain Hugging Face model (`AutoModel` loads it)
beside `classifier.safetensors` and `classifier.json`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore

HEAD_WEIGHTS, HEAD_CONFIG = "classifier.safetensors", "classifier.json"


class MeanPooledClassifier(torch.nn.Module):
    def __init__(self, encoder, labels: list[str]):
        super().__init__()
        self.encoder, self.labels = encoder, list(labels)
        self.config = encoder.config  # what the fine-tuning controls read (dropout, layers)
        self.dropout = torch.nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory):
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        save_file({f"classifier.{k}": v.contiguous() for k, v in self.classifier.state_dict().items()}, directory / HEAD_WEIGHTS)
        (directory / HEAD_CONFIG).write_text(json.dumps({"labels": self.labels}, indent=2), encoding="utf-8")


class MeanPooledClassifierHead(lccore.Head):
    def build(self, model, spec):
        return MeanPooledClassifier(AutoModel.from_pretrained(model, add_pooling_layer=False), spec["labels"])

    def load(self, model_dir):
        model_dir = Path(model_dir)
        config = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
        model = MeanPooledClassifier(AutoModel.from_pretrained(model_dir, add_pooling_layer=False), config["labels"])
        weights = load_file(model_dir / HEAD_WEIGHTS)
        model.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items()})
        return model
