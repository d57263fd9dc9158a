"""Adagrad as the paper uses it (§5, [DHS10]) with the MAP weight prior folded in as weight decay, for one
model or a stack of k models with a step size each.

Update, following the authors' ``wzoptim.py``: ``w -= lr * g / sqrt(sum_t g_t^2 + eps)``; during the first
``warmup`` steps squared gradients are only accumulated. The prior N(0, prior_sd^2 I) on a weight matrix
adds ``weight_decay * w`` to its gradient (same mathematics as an explicit log-prior term in the loss).

Speed: the step is memory-bound (a few passes over every parameter), so it is done in as few passes as
possible. The accumulator ``state["sum"]`` starts at ``eps`` instead of 0, so that it holds
``eps + sum_t g_t^2`` and the update is ``w -= lr * g / sqrt(sum)``: the same number as the authors'
``sqrt(sum_t g_t^2 + eps)``, up to float rounding. On the CPU that update is PyTorch's fused Adagrad kernel
(``torch._fused_adagrad_`` with its ``eps`` at 0 and no step-size decay: weight decay, accumulation and
update in one pass per tensor); elsewhere three multi-tensor (``torch._foreach``) kernels.

``StackedAdagrad`` steps k stacked models (a leading model dimension on every parameter) with a global step
size per model: it is k of these optimizers in one. Its update off the CPU (``stacked_update``) can run compiled
by torch.compile, which fuses it into a few kernels over all parameters (``compile_update``). ``adagrad`` builds
a stack's optimizers, ``adagrad_step`` is the one step every update rule takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from vae.algorithms.fusion import compiled
from vae.algorithms.parallel import reduce_gradients
from vae.config import Config
from vae.models.nets import weight_matrices


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether PyTorch's fused CPU Adagrad kernel can do the whole step for ``params``."""
    return all(p.device.type == "cpu" and not p.is_sparse for p in params)


def accumulate(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], decay: float
) -> list[torch.Tensor]:
    """g += decay * w (the prior), sum += g^2; returns the decayed gradients."""
    if decay:
        grads = list(torch._foreach_add(grads, params, alpha=decay))
    torch._foreach_addcmul_(sums, grads, grads)
    return grads


def stacked_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], lrs: torch.Tensor, decay: float
) -> None:
    """One Adagrad step of k stacked models, model j with step size ``lrs[j]``: g += decay * w (the prior),
    sum += g^2, w -= lr_j * g / sqrt(sum)."""
    grads = accumulate(params, grads, sums, decay)
    updates = torch._foreach_div(grads, torch._foreach_sqrt(sums))
    torch._foreach_mul_(updates, [lrs.view(-1, *[1] * (p.dim() - 1)) for p in params])
    torch._foreach_sub_(params, updates)


class Adagrad(torch.optim.Optimizer):
    """``fused``: use PyTorch's fused CPU kernel (None: wherever it can, i.e. for CPU tensors)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        eps: float = 1e-8,
        warmup: int = 0,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, warmup=warmup, weight_decay=weight_decay, step=0))
        self.fused = fused
        self._ones: dict[torch.device, torch.Tensor] = {}  # the fused kernel's step counts (unused: no decay)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            sums = [self.accumulator(p, group["eps"]) for p in params]
            decay = group["weight_decay"]
            group["step"] += 1
            if group["step"] <= group["warmup"]:
                accumulate(params, grads, sums, decay)
            else:
                self.update(params, grads, sums, group["lr"], decay)

    def update(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], lr: float, decay: float
    ) -> None:
        """One step past the warm-up: g += decay * w, sum += g^2, w -= lr * g / sqrt(sum). On the CPU this is
        PyTorch's fused Adagrad kernel (one pass per tensor), elsewhere three multi-tensor kernels."""
        if self.use_fused(params):
            torch._fused_adagrad_(
                params,
                grads,
                sums,
                [self._one(params[0].device)] * len(params),
                lr=lr,
                lr_decay=0.0,
                weight_decay=decay,
                eps=0.0,
                maximize=False,
            )
            return
        grads = accumulate(params, grads, sums, decay)
        torch._foreach_addcdiv_(params, grads, torch._foreach_sqrt(sums), value=-lr)

    def use_fused(self, params: list[torch.Tensor]) -> bool:
        return fusable(params) if self.fused is None else self.fused

    def _one(self, device: torch.device) -> torch.Tensor:
        """The fused kernel's step count (unused: no step-size decay)."""
        if device not in self._ones:
            self._ones[device] = torch.ones((), device=device)
        return self._ones[device]

    def accumulator(self, p: torch.Tensor, eps: float) -> torch.Tensor:
        """The parameter's ``eps + sum_t g_t^2``, created at ``eps`` on first use."""
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.full_like(p, eps, memory_format=torch.preserve_format)
        return state["sum"]


class StackedAdagrad(Adagrad):
    """``Adagrad`` over stacked parameters (leading dimension k) with one global step size per model: slice j
    of every parameter moves by ``lrs[j] * g_j / sqrt(sum_j)``. Only ``update`` differs: on the CPU the fused
    kernel runs once per distinct step size, over the slices of the models that use it; elsewhere (and inside
    a CUDA graph) ``stacked_update`` scales each slice by its step size, read from a device tensor."""

    def __init__(
        self, params: Iterable[Any], lrs: Sequence[float], eps: float, warmup: int, fused: bool | None = None
    ) -> None:
        super().__init__(params, lr=1.0, eps=eps, warmup=warmup, fused=fused)
        self.lr_values = [float(lr) for lr in lrs]  # exact, for logs and checkpoints
        self._on_device: torch.Tensor | None = None
        self._update = stacked_update

    def compile_update(self, on: bool) -> None:
        """Run ``stacked_update`` compiled by torch.compile (inductor: one pass per parameter tensor, the prior,
        accumulation and step fused), on any device; off: eager kernels (the CPU's fused kernel there)."""
        self._update = compiled(stacked_update) if on else stacked_update

    def set_lrs(self, lrs: Sequence[float]) -> None:
        """The step size of every model (the device copy is updated in place: a captured graph keeps reading it)."""
        self.lr_values = [float(lr) for lr in lrs]
        if self._on_device is not None:
            self._on_device.copy_(torch.tensor(self.lr_values, dtype=torch.float64))

    def update(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], lr: float, decay: float
    ) -> None:
        if self._update is stacked_update and self.use_fused(params):
            values = self.lr_values
            if len(set(values)) == 1:  # one step size: the whole stacked tensors at once
                super().update(params, grads, sums, values[0], decay)
                return
            for value in sorted(set(values)):
                models = [j for j, v in enumerate(values) if v == value]
                p, g, s = ([t[j] for t in tensors for j in models] for tensors in (params, grads, sums))
                super().update(p, g, s, value, decay)
            return
        self._update(params, grads, sums, self._device_lrs(params[0]), decay)

    def _device_lrs(self, like: torch.Tensor) -> torch.Tensor:
        """The step sizes on the parameters' device, copied once (a CUDA graph replays the same tensor)."""
        if self._on_device is None or self._on_device.device != like.device:
            self._on_device = torch.tensor(self.lr_values, device=like.device, dtype=like.dtype)
        return self._on_device


def adagrad(modules: Sequence[torch.nn.Module], cfg: Config, lrs: Sequence[float]) -> list[StackedAdagrad]:
    """Adagrad (§5) over each of ``modules``: weight matrices with the prior N(0, prior_sd^2 I) as weight decay
    1/(N prior_sd^2), i.e. the gradient of (1/N) log p(theta) added to the per-datapoint bound (eq. 8 plus the
    prior, divided by N), then the other parameters without it; a step size per model."""
    assert cfg.n_train is not None  # a Config holds its dataset's default in place of null
    decay = 1.0 / (cfg.n_train * cfg.prior_sd**2)
    optimizers = []
    for module in modules:
        weights = weight_matrices(module)
        ids = {id(p) for p in weights}
        others = [p for p in module.parameters() if id(p) not in ids]
        groups = [dict(params=weights, weight_decay=decay), dict(params=others, weight_decay=0.0)]
        optimizers.append(StackedAdagrad(groups, lrs, cfg.adagrad_eps, cfg.adagrad_warmup))
    return optimizers


def adagrad_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One Adagrad step of ``optimizer``'s parameters down ``loss`` (minus the objective): fresh gradients,
    summed over the DDP ranks, then the update."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = None
    loss.backward()
    reduce_gradients(params)
    optimizer.step()
