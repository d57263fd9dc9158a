"""Kernel fusion by torch.compile (inductor) for the fused steps of a stack (``Stack.fuse``)."""

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
