"""The `crf` head: a linear-chain conditional random field over the encoder's token emissions,
trained on the sequence log-likelihood and decoded with Viterbi (the CRF itself is pytorch-crf's).

The chain runs over the labelled positions only: the first sub-token of each word (all sub-tokens
with `label_all_subtokens`), packed side by side; at prediction time over every non-special
token. Saved as a Hugging Face encoder folder (loads with `transformers.AutoModel`) plus
`crf_head.safetensors` and `crf_head.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torchcrf import CRF
from transformers import AutoModel, AutoTokenizer
from transformers.utils import ModelOutput

import lccore

HEAD_WEIGHTS = "crf_head.safetensors"
HEAD_CONFIG = "crf_head.json"


@dataclass
class CRFOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # per-token emission scores
    tag_ids: torch.Tensor | None = None  # the Viterbi path per position, -1 off the chain


class CRFTagger(torch.nn.Module):
    def __init__(self, encoder, labels: list[str], special_ids: list[int]):
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.special_ids = list(special_ids)
        self.dropout = torch.nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.emissions = torch.nn.Linear(encoder.config.hidden_size, len(labels))
        self.crf = CRF(len(labels), batch_first=True)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        emissions = self.emissions(self.dropout(hidden))
        if labels is not None:
            on_chain = labels != -100
        else:
            specials = torch.tensor(self.special_ids, device=input_ids.device)
            on_chain = attention_mask.bool() & ~torch.isin(input_ids, specials)
        packed, mask, positions = pack(emissions.float(), on_chain)
        loss = None
        if labels is not None:
            packed_labels = torch.zeros(mask.shape, dtype=torch.long, device=labels.device)
            for row, where in enumerate(positions):
                packed_labels[row, : len(where)] = labels[row, where]
            loss = -self.crf(packed, packed_labels, mask, reduction="mean")
        tag_ids = None
        if not self.training:
            tag_ids = torch.full(input_ids.shape, -1, dtype=torch.long, device=input_ids.device)
            for row, path in enumerate(self.crf.decode(packed, mask)):
                where = positions[row]
                tag_ids[row, where] = torch.tensor(path[: len(where)], dtype=torch.long, device=input_ids.device)  # [] for a row of special tokens only
        return CRFOutput(loss=loss, logits=emissions, tag_ids=tag_ids)

    def save_pretrained(self, directory):
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        weights = {f"emissions.{k}": v for k, v in self.emissions.state_dict().items()}
        weights.update({f"crf.{k}": v for k, v in self.crf.state_dict().items()})
        save_file({k: v.contiguous() for k, v in weights.items()}, directory / HEAD_WEIGHTS)
        config = {"labels": self.labels, "special_ids": self.special_ids}
        (directory / HEAD_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")


def pack(emissions, on_chain):
    """Move each row's chain positions to the front: (packed emissions, mask, positions per row).

    A row with no position keeps one masked-in dummy step, since the CRF needs a first step."""
    positions = [row.nonzero().squeeze(-1) for row in on_chain]
    width = max(1, max(len(p) for p in positions))
    packed = emissions.new_zeros(emissions.shape[0], width, emissions.shape[-1])
    mask = torch.zeros(emissions.shape[0], width, dtype=torch.bool, device=emissions.device)
    for row, where in enumerate(positions):
        packed[row, : len(where)] = emissions[row, where]
        mask[row, : max(1, len(where))] = True
    return packed, mask, positions


class CRFHead(lccore.Head):
    supports_label_smoothing = False  # the loss is the chain's log-likelihood, not a cross-entropy

    def build(self, model, spec):
        special_ids = sorted(set(AutoTokenizer.from_pretrained(model).all_special_ids))
        return CRFTagger(AutoModel.from_pretrained(model), spec["labels"], special_ids)

    def load(self, model_dir):
        model_dir = Path(model_dir)
        config = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
        model = CRFTagger(AutoModel.from_pretrained(model_dir), config["labels"], config["special_ids"])
        weights = load_file(model_dir / HEAD_WEIGHTS)
        model.emissions.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("emissions.")})
        model.crf.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("crf.")})
        return model
