"""Data parallelism over DDP ranks (stacks of one): every rank draws the whole global minibatch of M (indices,
binarization, noise) from identically seeded generators and keeps its share; each rank's loss is its share of
the bound's sum divided by M and one all-reduce sums the gradients, so the step is the single-process step up
to summation order."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int) -> slice:
    """This rank's part of n items split over the ranks, the first ``n mod ranks`` taking one more."""
    rank, world = rank_and_world()
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def sum_over_ranks(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over the ranks, in place (nothing with one rank)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor)


def reduce_gradients(params: list[nn.Parameter]) -> None:
    """Sum the ranks' gradients (each already divided by the global M) in one all-reduce."""
    if rank_and_world()[1] == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    assert len(grads) == len(params), "a parameter has no gradient"
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))
