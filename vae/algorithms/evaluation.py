"""The lower bound of a stack's models on a whole dataset (the Figure 2 curves), with evaluation noise that
depends only on (seed, samples), so it never disturbs the training streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from vae.algorithms.parallel import rank_and_world

if TYPE_CHECKING:
    from vae.algorithms.stack import Stack


def eval_generators(stack: Stack) -> list[torch.Generator]:
    """One generator per model, seeded ``seed * 1_000_003 + samples``."""
    return [torch.Generator(stack.device).manual_seed(cfg.seed * 1_000_003 + stack.samples) for cfg in stack.configs]


@torch.no_grad()
def evaluate(stack: Stack, x: torch.Tensor, generators: Sequence[torch.Generator]) -> list[float]:
    """Each model's average lower bound per datapoint over all of ``x`` (estimator B, L = 1, eq. 7), in batches
    of ``eval_batch``, model j drawing from ``generators[j]``. Under DDP every rank draws the noise of every
    batch and bounds every ``ranks``-th batch; the sums are reduced."""
    rank, world = rank_and_world()
    cfg = stack.cfg
    total = torch.zeros(stack.k, device=x.device, dtype=torch.float64)
    for i, chunk in enumerate(x.split(cfg.eval_batch)):
        xs = chunk.expand(stack.k, *chunk.shape)
        if cfg.binarize == "dynamic":
            xs = stack.draws.bernoulli(xs, generators)
        eps = stack.draws.normal(1, len(chunk), generators=generators)
        if i % world == rank:
            total += stack.bound(xs, eps, "B").sum(-1, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(total)
    return [float(t) / len(x) for t in total]
