"""Kernel fusion by torch.compile (inductor) for the fused steps of a stack: ``compiled`` and ``Regions``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Each shape of stack compiles its own kernels: a process that trains several (the §5 candidates, a sweep's
# stacks, a benchmark) would pass dynamo's default of 8 variants per function and silently run eagerly.
RECOMPILE_LIMIT = 64


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by inductor for static shapes (a new shape compiles anew rather than going dynamic)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn, dynamic=False)


class Regions:
    """An update rule's arithmetic regions (methods holding arithmetic but no random draw), compiled when fused
    (``compile: true`` on CUDA), else run as they are (the eager reference). Shapes are static: a stack of another
    size compiles its own kernels. Compilation happens at a region's first call."""

    def __init__(self) -> None:
        self.on = False
        self.compiled: dict[str, Callable[..., Any]] = {}

    def fuse(self, on: bool) -> None:
        self.on = on
        self.compiled = {}

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not self.on:
            return fn
        if fn.__name__ not in self.compiled:
            self.compiled[fn.__name__] = compiled(fn)
        return self.compiled[fn.__name__]
