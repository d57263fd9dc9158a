"""Adagrad as the paper uses it (§5, [DHS10]) with the MAP weight prior folded in as weight decay.

Update, following the authors' ``wzoptim.py``: ``w -= lr * g / sqrt(sum_t g_t^2 + eps)``; during the first
``warmup`` steps squared gradients are only accumulated. The prior N(0, prior_sd^2 I) on a weight matrix
adds ``weight_decay * w`` to its gradient (same mathematics as an explicit log-prior term in the loss).
All parameters of a group are updated with fused multi-tensor (``torch._foreach``) kernels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class Adagrad(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float, eps: float = 1e-8, warmup: int = 0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, warmup=warmup, weight_decay=weight_decay, step=0))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            sums = [self._sum(p) for p in params]
            torch._foreach_addcmul_(sums, grads, grads)
            group["step"] += 1
            if group["step"] > group["warmup"]:
                denom = torch._foreach_add(sums, group["eps"])
                torch._foreach_sqrt_(denom)
                torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])

    def _sum(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p)
        return state["sum"]

    def set_lr(self, lr: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr
