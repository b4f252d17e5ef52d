"""A base for heads that are not a Hugging Face model class: a pretrained backbone with layers of
your own on top, saved and loaded with safetensors.

A head plugin's :meth:`lccore.Head.build` and :meth:`lccore.Head.load` return a ``torch.nn.Module``
that lccore trains, saves (``model.save_pretrained(dir)``) and loads back. A Hugging Face
``*ForXxx`` class does all that; a model of your own subclasses :class:`BackboneWithHead`::

    class PairScorer(BackboneWithHead):
        def __init__(self, backbone, settings):
            super().__init__(backbone, settings)
            self.score = torch.nn.Linear(backbone.config.hidden_size, len(settings["labels"]))

        def forward(self, input_ids, attention_mask, labels=None, **kwargs):
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            ...

    class PairScorerHead(lccore.Head):
        def build(self, model, spec):
            return PairScorer.from_backbone(model, spec)

        def load(self, model_dir):
            return PairScorer.load(model_dir)

What the fine-tuning controls need, and this gives: ``config`` (the backbone's: dropout, layer
count), a ``transformers.PreTrainedModel`` among the modules (layer freezing, layer-wise learning
rates and LoRA find the layers in it), and ``save_pretrained``. The run's ``model/`` holds the
backbone as a plain Hugging Face folder (``AutoModel`` loads it), the head's own weights in
:attr:`BackboneWithHead.WEIGHTS_FILE` and ``settings`` (JSON) in :attr:`BackboneWithHead.SETTINGS_FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import ConfigError


class BackboneWithHead(torch.nn.Module):
    """``self.backbone`` (a ``transformers`` base model) and the layers a subclass adds; ``settings``
    is what the subclass needs to rebuild them (a JSON-serialisable dict: labels, sizes)."""

    #: The head's own weights (every parameter and buffer outside ``backbone``), beside the backbone's files.
    WEIGHTS_FILE = "head.safetensors"
    #: ``settings``, as JSON.
    SETTINGS_FILE = "head.json"

    def __init__(self, backbone, settings: dict):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config  # what the fine-tuning controls read (dropout, layers)
        self.settings = dict(settings)

    @classmethod
    def from_backbone(cls, model: str, settings: dict, **backbone_options):
        """A new model: the pretrained backbone ``model`` (path or hub id, loaded with ``AutoModel``)
        and freshly initialised head layers."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(model, **backbone_options), settings)

    @classmethod
    def load(cls, directory, **backbone_options):
        """The model :meth:`save_pretrained` wrote into ``directory``; a head file that is missing,
        or lacks a weight the head has, is a one-line error naming the file."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        directory = Path(directory)
        try:
            settings = json.loads((directory / cls.SETTINGS_FILE).read_text(encoding="utf-8"))
            weights = load_file(directory / cls.WEIGHTS_FILE)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{directory}: cannot read the head's files ({cls.SETTINGS_FILE}, {cls.WEIGHTS_FILE}): {exc}") from None
        model = cls(AutoModel.from_pretrained(directory, **backbone_options), settings)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [key for key in missing if not key.startswith("backbone.")]
        if missing or unexpected:
            raise ConfigError(f"{directory / cls.WEIGHTS_FILE}: does not fit {cls.__name__} (missing: {missing[:5]}, unexpected: {unexpected[:5]})")
        return model

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(directory)
        own = {key: value.detach().contiguous() for key, value in self.state_dict().items() if not key.startswith("backbone.")}
        save_file(own, directory / self.WEIGHTS_FILE)
        (directory / self.SETTINGS_FILE).write_text(json.dumps(self.settings, indent=2), encoding="utf-8")
