"""The `lion` optimizer: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Each step moves every weight by ``lr`` times the *sign* of an interpolation of the momentum and
the gradient, so updates are larger than AdamW's for the same ``lr``: use a 3-10x smaller one.
Weight decay is decoupled, per parameter group (lccore's groups leave biases and norms out)."""

from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(param)
                momentum = state["exp_avg"]
                param.mul_(1 - lr * decay)
                param.add_(momentum.mul(beta1).add_(param.grad, alpha=1 - beta1).sign_(), alpha=-lr)
                momentum.mul_(beta2).add_(param.grad, alpha=1 - beta2)
        return loss
