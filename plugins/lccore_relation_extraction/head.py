"""The `entity_marker_classifier` head: [h_head_marker; h_tail_marker] -> dropout -> linear.

Saved as a Hugging Face encoder folder (loads with `transformers.AutoModel`) plus
`relation_head.safetensors` and `relation_head.json` for the classifier layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore

HEAD_WEIGHTS = "relation_head.safetensors"
HEAD_CONFIG = "relation_head.json"


class EntityMarkerModel(torch.nn.Module):
    def __init__(self, encoder, labels: list[str]):
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        hidden = encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(2 * hidden, len(labels))

    def forward(self, input_ids, attention_mask, head_index, tail_index, token_type_ids=None, labels=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pair = torch.cat([hidden[rows, head_index], hidden[rows, tail_index]], dim=-1)
        logits = self.classifier(self.dropout(pair))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory):
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.classifier.state_dict().items()}, directory / HEAD_WEIGHTS)
        (directory / HEAD_CONFIG).write_text(json.dumps({"labels": self.labels}, indent=2), encoding="utf-8")


class EntityMarkerHead(lccore.Head):
    def build(self, model, spec):
        return EntityMarkerModel(AutoModel.from_pretrained(model), spec["labels"])

    def load(self, model_dir):
        model_dir = Path(model_dir)
        labels = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))["labels"]
        model = EntityMarkerModel(AutoModel.from_pretrained(model_dir), labels)
        model.classifier.load_state_dict(load_file(model_dir / HEAD_WEIGHTS))
        return model
