"""Fine-tuning controls applied around a head's model: freezing (static and gradual), dropout
overrides, layer-wise learning-rate decay, LoRA adapters (peft), and loading a run's model back.

SKELETON: to be implemented (see the functions' docstrings). The training loop calls exactly these.
"""

from __future__ import annotations


def prepare_model(model, config):
    """Apply ``config.train.dropout``, ``config.train.lora`` and the initial state of
    ``config.train.freeze`` to a freshly built model; returns the model to train (a peft model
    when LoRA is on)."""
    return model


def start_epoch(model, config, epoch: int) -> None:
    """Gradual unfreezing: at the start of each epoch (0-based) make one more layer trainable."""


def parameter_groups(model, optimizer_config) -> list[dict]:
    """Optimiser parameter groups: weight decay on weight matrices only; with
    ``optimizer_config.layer_lr_decay`` one learning rate per layer depth."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": optimizer_config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_trained_model(head, config, spec: dict, model_dir):
    """The model a run saved in ``model_dir``: ``head.load`` for full weights; for a LoRA run the
    base model (``head.build(config.model, spec)``) with the saved adapter on top."""
    return head.load(model_dir)
