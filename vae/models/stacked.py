"""Layers of k models as one: stacked parameters with a leading model dimension, every layer one batched
matrix product. This is how one device steps many of the paper's small networks (App. C) at once.

Models whose latent sizes differ share a stack by zero-padding to the largest size, with exact masking:

* the encoder heads' outputs (mu, log sigma^2) are multiplied by a 0/1 mask, so a padded dimension has
  mu = log sigma^2 = 0 whatever its weights, and its head weights get exactly zero gradient;
* its noise eps is 0, so z = mu + sigma * eps = 0, and the decoder's padded input columns get zero gradient
  and contribute exact zeros;
* its KL term of eq. (10) is 0.5 (1 + 0 - 0 - 1) = 0 with zero gradient.

Padded weights start at zero, get zero gradient and zero weight decay, and Adagrad moves them by
0 / sqrt(eps): they stay exactly zero. Models of one shape (seeds, step-size candidates) need no padding and
no mask. A stack of one runs each layer as a plain ``addmm``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

Net = TypeVar("Net", bound=nn.Module)


class StackedLinear(nn.Module):
    """k linear layers y_j = W_j v_j + b_j in one batched matmul. ``weight`` is (k, out, in) and ``bias``
    (k, out), each layer zero-padded to the largest in/out size; rows past a layer's own output size are
    masked to exactly zero."""

    mask: torch.Tensor | None  # a buffer, None where no layer is padded

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        """``weight`` is (k, out, in) and ``bias`` (k, out); for k = 1, (out, in) and (out)."""
        super().__init__()
        k, out = len(layers), max(layer.out_features for layer in layers)
        weight = torch.zeros(k, out, max(layer.in_features for layer in layers))
        bias = torch.zeros(k, out)
        with torch.no_grad():
            for j, layer in enumerate(layers):
                weight[j, : layer.out_features, : layer.in_features] = layer.weight
                bias[j, : layer.out_features] = layer.bias
        # a stack of one keeps the layer's own shapes: no view of a parameter (and its gradient) per step
        self.weight = nn.Parameter(weight[0] if k == 1 else weight)
        self.bias = nn.Parameter(bias[0] if k == 1 else bias)
        self.sizes = [(layer.in_features, layer.out_features) for layer in layers]
        self.padded = len(set(self.sizes)) > 1
        sizes = torch.tensor([layer.out_features for layer in layers])
        mask = (torch.arange(out) < sizes[:, None]).to(weight.dtype).unsqueeze(1)  # (k, 1, out)
        self.register_buffer("mask", mask if self.padded else None, persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v: (..., k, N, in) -> (..., k, N, out); leading dimensions (the L samples of z) join N. On a GPU every
        layer is one ``baddbmm`` (a view, no copy, when there are none or L = 1), masked where padded; so is a
        compiled step on any device. A stack of one, and an eager stack on the CPU (where batching saves
        nothing), runs one ``addmm`` per model on its unpadded block, whose padded outputs stay exactly zero."""
        *lead, k, n, d = v.shape
        if k == 1:
            return torch.addmm(self.bias, v.reshape(-1, d), self.weight.T).view(*lead, 1, n, -1)
        if not batched(v):
            return _BlockLinear.apply(v, self.weight, self.bias, self.sizes)
        y = torch.baddbmm(self.bias.unsqueeze(1), v.movedim(-3, 0).reshape(k, -1, d), self.weight.mT)
        y = y.reshape(k, *lead, n, -1).movedim(0, -3)
        return y if self.mask is None else y * self.mask


def batched(v: torch.Tensor) -> bool:
    """Whether a stacked layer runs as one masked ``baddbmm``: off the CPU, and in a compiled step on any device."""
    return v.device.type != "cpu" or torch.compiler.is_compiling()


class _BlockLinear(torch.autograd.Function):
    """The CPU kernel of ``StackedLinear``: one ``addmm`` per model on the unpadded block of its weight. Padded
    outputs are exactly zero and padded weights get exactly zero gradient, as with the mask; the gradients are
    written block by block, so no model's step touches another model's (or the padding's) memory twice."""

    @staticmethod
    # ctx: Any, as torch passes it (a BackwardCFunction): FunctionCtx declares neither saved_tensors nor
    # needs_input_grad, and torch's stubs type saved_tensors as a 1-tuple; ctx.sizes is our own
    def forward(
        ctx: Any, v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> torch.Tensor:
        ctx.save_for_backward(v, weight)
        ctx.sizes = sizes
        *lead, k, n, _ = v.shape
        padded = len(set(sizes)) > 1
        y = (v.new_zeros if padded else v.new_empty)(*lead, k, n, weight.shape[1])
        for j, (i, o) in enumerate(sizes):
            y[..., j, :, :o] = torch.addmm(bias[j, :o], v[..., j, :, :i].reshape(-1, i), weight[j, :o, :i].T).view(
                *lead, n, o
            )
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, None]:
        v, weight = ctx.saved_tensors
        *lead, _k, n, _ = v.shape
        grad_v = torch.zeros_like(v) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight)
        grad_b = weight.new_zeros(weight.shape[:2])
        for j, (i, o) in enumerate(ctx.sizes):
            g = grad[..., j, :, :o].reshape(-1, o)
            grad_w[j, :o, :i] = g.T @ v[..., j, :, :i].reshape(-1, i)
            grad_b[j, :o] = g.sum(0)
            if grad_v is not None:
                grad_v[..., j, :, :i] = (g @ weight[j, :o, :i]).view(*lead, n, i)
        return grad_v, grad_w, grad_b, None


def stack_nets(nets: Sequence[Net]) -> Net:
    """The k networks of one kind (App. C) as one network of that kind whose linear layers are stacked: the
    nets' own ``forward`` and ``log_prob`` (tanh, sigmoid mean, log-variance floor) then run all k at once."""
    template = nets[0]
    stacked = copy.deepcopy(template)
    for name, layer in template.named_children():
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"cannot stack {type(layer).__name__} layer {name!r}")
        setattr(stacked, name, StackedLinear([getattr(net, name) for net in nets]))
    return stacked
