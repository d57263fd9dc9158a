"""The random draws of a stack of k models: model j has its own generator, seeded ``seed + 1``, and its own
permutation for minibatches without replacement; every draw of model j (minibatch indices, dynamic
binarization, noise, fantasies) comes from that generator in the order and shapes of a stack of one, so model
j's trajectory does not depend on the models beside it (up to floating-point summation order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vae.algorithms.parallel import share
from vae.config import Config


class Stream:
    """One model's training random stream and minibatch position."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def indices(self, n: int, M: int, replacement: bool) -> torch.Tensor:
        """The M training indices of the next minibatch: drawn with replacement, or the next M of a permutation
        redrawn whenever fewer than M are left."""
        device = self.generator.device
        if replacement:
            return torch.randint(n, (M,), device=device, generator=self.generator)
        if self.perm is None or self.pos + M > n:
            self.perm = torch.randperm(n, device=device, generator=self.generator)
            self.pos = 0
        self.pos += M
        return self.perm[self.pos - M : self.pos]

    def state(self) -> dict[str, Any]:
        return dict(rng=self.generator.get_state(), perm=None if self.perm is None else self.perm.clone(), pos=self.pos)

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.generator.device)
        self.pos = state["pos"]


class Draws:
    """The streams of the models ``configs``, made on their device by ``attach``; a stream's state loaded
    before then (``load``) is kept until it."""

    def __init__(self, configs: Sequence[Config]) -> None:
        self.configs = tuple(configs)
        self.streams: list[Stream] = []
        self.pending: list[dict[str, Any] | None] = [None] * len(configs)

    def attach(self, device: torch.device) -> None:
        self.streams = [Stream(cfg, device) for cfg in self.configs]
        for stream, state in zip(self.streams, self.pending, strict=True):
            if state is not None:
                stream.load(state)
        self.pending = [None] * len(self.configs)

    def state(self, j: int) -> dict[str, Any] | None:
        return self.streams[j].state() if self.streams else self.pending[j]

    def load(self, j: int, state: dict[str, Any]) -> None:
        if self.streams:
            self.streams[j].load(state)
        else:
            self.pending[j] = state

    def generators(self) -> list[torch.Generator]:
        return [s.generator for s in self.streams]

    def minibatch(self, train_x: torch.Tensor) -> torch.Tensor:
        """Each model's share of M training datapoints (k, M_rank, D), drawn by index from its own stream and
        binarized dynamically if configured; all M are drawn on every rank."""
        cfg, k = self.configs[0], len(self.configs)
        idx = [s.indices(len(train_x), cfg.M, cfg.replacement) for s in self.streams]
        x = train_x[idx[0]].unsqueeze(0) if k == 1 else train_x[torch.stack(idx)]
        if cfg.binarize == "dynamic":
            x = self.bernoulli(x)
        return x[:, share(cfg.M)]

    def bernoulli(self, p: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Bernoulli draws of p (k, n, D), model j's from its own generator."""
        gens = generators or self.generators()
        if len(gens) == 1:
            return torch.bernoulli(p, generator=gens[0])
        return torch.stack([torch.bernoulli(pj, generator=g) for pj, g in zip(p, gens, strict=True)])

    def normal(
        self, *shape: int, generators: Sequence[torch.Generator] | None = None, sizes: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Standard normal draws (*shape, k, n, max size) for ``shape`` = (..., n): model j draws (..., n,
        sizes[j]) from its own generator (sizes: the latent sizes by default), zero-padded to the largest."""
        gens = generators or self.generators()
        sizes = sizes or [cfg.nz for cfg in self.configs]
        device = gens[0].device
        *lead, n = shape
        draws = [torch.randn((*lead, n, size), device=device, generator=g) for size, g in zip(sizes, gens, strict=True)]
        if len(draws) == 1:
            return draws[0].unsqueeze(-3)
        width = max(sizes)
        if all(size == width for size in sizes):
            return torch.stack(draws, dim=-3)
        out = torch.zeros((*lead, len(draws), n, width), device=device)
        for j, draw in enumerate(draws):
            out[..., j, :, : sizes[j]] = draw
        return out
