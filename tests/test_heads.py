"""lccore.heads.BackboneWithHead: a head of one's own saved and loaded with safetensors (issue 19)."""

from __future__ import annotations

import pytest
import torch

import lccore
from lccore.heads import BackboneWithHead


class TwoLayers(BackboneWithHead):
    def __init__(self, backbone, settings):
        super().__init__(backbone, settings)
        self.hidden = torch.nn.Linear(backbone.config.hidden_size, settings["width"])
        self.out = torch.nn.Linear(settings["width"], 2)

    def forward(self, input_ids, attention_mask, **kwargs):
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.out(torch.relu(self.hidden(states[:, 0])))


def test_a_head_of_ones_own_saves_and_loads_back_exactly(tiny_model, tmp_path):
    from transformers import AutoModel, PreTrainedModel

    model = TwoLayers.from_backbone(tiny_model, {"width": 7}).eval()
    assert model.config is model.backbone.config and any(isinstance(m, PreTrainedModel) for m in model.modules())  # what the fine-tuning controls read
    batch = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").glob("head.*")) == ["head.json", "head.safetensors"]
    AutoModel.from_pretrained(tmp_path / "saved")  # the backbone is a plain Hugging Face folder
    loaded = TwoLayers.load(tmp_path / "saved").eval()
    assert loaded.settings == {"width": 7}
    with torch.no_grad():
        assert torch.equal(model(**batch), loaded(**batch))


def test_a_missing_or_mismatched_head_file_is_one_line_naming_it(tiny_model, tmp_path):
    TwoLayers.from_backbone(tiny_model, {"width": 7}).save_pretrained(tmp_path / "saved")

    class Wider(TwoLayers):
        def __init__(self, backbone, settings):
            super().__init__(backbone, settings)
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(lccore.ConfigError, match=r"head.safetensors: does not fit Wider \(missing: \['extra.weight', 'extra.bias'\]"):
        Wider.load(tmp_path / "saved")
    (tmp_path / "saved" / "head.json").unlink()
    with pytest.raises(lccore.ConfigError, match=r"cannot read the head's files \(head.json, head.safetensors\)"):
        TwoLayers.load(tmp_path / "saved")
