"""Log-densities and the analytic KL used by the bounds (§3, App. B, App. C).

Reduction convention, stated once: every function returns one value per datapoint, summed over pixels and
latent dimensions, in nats.

Speed: the Bernoulli log-likelihood and ``softplus`` are autograd Functions with their analytic gradients.
PyTorch's CPU ``softplus`` (``log1p(exp(v))``) costs ten times what ``exp`` and ``log`` do and was the
largest cost of an MNIST training step after the matrix products; here ``softplus(v)`` is computed as
``max(v, 0) + log(1 + exp(-|v|))`` with in-place kernels, and the backward pass is one ``sigmoid``. The
same function and the same gradient, to float rounding: ``log(1 + e)`` with ``e = exp(-|v|) <= 1`` is
within half an ulp of 1 (6e-8) of ``log1p(e)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

LOG_2PI = math.log(2.0 * math.pi)


def _softplus_values(v: torch.Tensor) -> torch.Tensor:
    """softplus(v) = max(v, 0) + log(1 + exp(-|v|)), stable for any v, without autograd. In a compiled step the
    same operations run out of place: inductor fuses them anyway, and torch 2.11 compiles the in-place chain
    inside ``_Softplus`` into a wrong gradient (``tests/test_fused_steps.py`` catches it)."""
    if torch.compiler.is_compiling():
        return torch.log(torch.exp(-v.abs()) + 1.0) + v.clamp(min=0.0)
    out = v.abs().neg_().exp_().add_(1.0).log_()
    return out.add_(v.clamp(min=0.0))


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v)
        return _softplus_values(v)

    @staticmethod
    # ctx: Any, as torch passes it (a BackwardCFunction): FunctionCtx declares neither saved_tensors nor
    # needs_input_grad, and torch's stubs type saved_tensors as a 1-tuple
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad * torch.sigmoid(v)


def softplus(v: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(v)), elementwise (``torch.nn.functional.softplus``), with gradient sigmoid(v)."""
    return _Softplus.apply(v)


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` itself (cheaper than ``torch.broadcast_shapes``)."""
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False)
    )


class _LogBernoulli(torch.autograd.Function):
    """sum_i x_i l_i - softplus(l_i) over the last dimension; gradient (x - sigmoid(l)) for l, l for x."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, logits)
        terms = torch.mul(x, logits)
        return terms.sub_(_softplus_values(logits)).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, logits = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_x = grad_logits = None
        if ctx.needs_input_grad[1]:
            prob = torch.sigmoid(logits)
            if torch.is_grad_enabled() or not _broadcasts_into(x.shape, logits.shape):
                grad_logits = ((x - prob) * grad).sum_to_size(logits.shape)  # double backward; x broadcast
            else:
                grad_logits = prob.neg_().add_(x).mul_(grad)  # in place: no new tensors
        if ctx.needs_input_grad[0]:
            full = torch.broadcast_shapes(x.shape, logits.shape)
            grad_x = (logits * grad).expand(full).sum_to_size(x.shape)
        return grad_x, grad_logits


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """eq. (11): sum_i x_i log y_i + (1 - x_i) log(1 - y_i) with y = sigmoid(logits), computed stably as
    sum_i x_i l_i - softplus(l_i).

    x may hold grey levels in [0, 1], as in the authors' MNIST runs.
    """
    return _LogBernoulli.apply(x, logits)


def log_normal(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dimension (eq. 9, eq. 12)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I): the prior p(z) of §3."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def neg_kl_std_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-D_KL(N(mean, exp(logvar)) || N(0, I)) in closed form (App. B; first term of eq. 10)."""
    return 0.5 * (1.0 + logvar - mean.pow(2) - torch.exp(logvar)).sum(-1)
