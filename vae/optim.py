"""Adagrad as the paper uses it (§5, [DHS10]) with the MAP weight prior folded in as weight decay.

Update, following the authors' ``wzoptim.py``: ``w -= lr * g / sqrt(sum_t g_t^2 + eps)``; during the first
``warmup`` steps squared gradients are only accumulated. The prior N(0, prior_sd^2 I) on a weight matrix
adds ``weight_decay * w`` to its gradient (same mathematics as an explicit log-prior term in the loss).

Speed: the step is memory-bound (a few passes over every parameter), so it is done in as few passes as
possible. The accumulator ``state["sum"]`` starts at ``eps`` instead of 0, so that it holds
``eps + sum_t g_t^2`` and the update is ``w -= lr * g / sqrt(sum)``: the same number as the authors'
``sqrt(sum_t g_t^2 + eps)``, up to float rounding. On the CPU that update is PyTorch's fused Adagrad kernel
(``torch._fused_adagrad_`` with its ``eps`` at 0 and no step-size decay: weight decay, accumulation and
update in one pass per tensor); elsewhere three multi-tensor (``torch._foreach``) kernels. A state saved
before the accumulator included ``eps`` (no ``sum_includes_eps`` in its parameter groups) is converted
when it is first stepped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

_FUSED = hasattr(torch, "_fused_adagrad_")  # PyTorch >= 2.4


class Adagrad(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float, eps: float = 1e-8, warmup: int = 0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, warmup=warmup, weight_decay=weight_decay, step=0,
                                      sum_includes_eps=True))
        self._ones: dict[torch.device, torch.Tensor] = {}  # the fused kernel's step counts (unused: no decay)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            if not group.get("sum_includes_eps"):
                self.include_eps(group)
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            sums = [self.accumulator(p, group["eps"]) for p in params]
            decay = group["weight_decay"]
            group["step"] += 1
            if group["step"] <= group["warmup"]:
                if decay:
                    grads = torch._foreach_add(grads, params, alpha=decay)
                torch._foreach_addcmul_(sums, grads, grads)
            elif self.fusable(params):
                ones = self._ones.get(params[0].device)
                if ones is None:
                    ones = self._ones[params[0].device] = torch.ones((), device=params[0].device)
                torch._fused_adagrad_(params, grads, sums, [ones] * len(params), lr=group["lr"], lr_decay=0.0,
                                      weight_decay=decay, eps=0.0, maximize=False)
            else:
                if decay:
                    grads = torch._foreach_add(grads, params, alpha=decay)
                torch._foreach_addcmul_(sums, grads, grads)
                self.update(params, grads, sums, group["lr"])

    def fusable(self, params: list[torch.Tensor]) -> bool:
        """Whether PyTorch's fused CPU kernel can do the whole step for ``params``."""
        return _FUSED and all(p.device.type == "cpu" and not p.is_sparse for p in params)

    def update(self, params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor],
               lr: float) -> None:
        """w -= lr * g / sqrt(sum), the accumulators already holding this step's g^2."""
        torch._foreach_addcdiv_(params, grads, torch._foreach_sqrt(sums), value=-lr)

    def accumulator(self, p: torch.Tensor, eps: float) -> torch.Tensor:
        """The parameter's ``eps + sum_t g_t^2``, created at ``eps`` on first use."""
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.full_like(p, eps, memory_format=torch.preserve_format)
        return state["sum"]

    def include_eps(self, group: dict[str, Any]) -> None:
        """Convert a group saved before the accumulator held eps (no ``sum_includes_eps``)."""
        for p in group["params"]:
            if "sum" in self.state[p]:
                self.state[p]["sum"].add_(group["eps"])
        group["sum_includes_eps"] = True

    def set_lr(self, lr: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr
