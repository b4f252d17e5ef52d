"""First-party plugin: the `adamw` and `sgd` optimisers."""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class AdamWOptions:
    betas: list[float] = attrs.field(factory=lambda: [0.9, 0.999], metadata={"doc": "Adam's (beta1, beta2)."})
    eps: float = attrs.field(default=1e-8, metadata={"doc": "Adam's epsilon."})
    fused: Optional[bool] = attrs.field(default=None, metadata={"doc": "Fused kernel; null: use it where the device supports it."})


@attrs.define
class SGDOptions:
    momentum: float = attrs.field(default=0.9, metadata={"doc": "Momentum factor.", "min": 0.0})
    nesterov: bool = attrs.field(default=False, metadata={"doc": "Nesterov momentum."})


@lccore.hookimpl
def register_optimizers(register):
    register("adamw", make_adamw, options=AdamWOptions, description="AdamW (fused kernel where available).")
    register("sgd", make_sgd, options=SGDOptions, description="SGD with momentum.")


def make_adamw(param_groups, config):
    import torch

    options = config.options
    fused = options.fused
    if fused is None:
        # The fused kernel runs one pass over all parameters; torch has it for CPU and CUDA tensors.
        fused = True
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=tuple(options.betas), eps=options.eps, fused=fused)


def make_sgd(param_groups, config):
    import torch

    options = config.options
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=options.momentum, nesterov=options.nesterov)
