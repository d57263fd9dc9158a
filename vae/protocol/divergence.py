"""A run diverges when its bound or its state stops being finite: it stops with one message that names the run,
the step and the step size, and keeps its last good checkpoint."""

from __future__ import annotations

import math
from typing import Any

import torch

from vae.algorithms.stack import Stack


class RunDiverged(RuntimeError):
    """The bound or the parameters stopped being finite."""


def not_finite(state: Any, at: str = "") -> list[str]:
    """Where ``state`` (nested dicts, lists and tensors) holds a floating-point tensor with a NaN or infinity."""
    if isinstance(state, torch.Tensor):
        return [at] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [p for k, v in state.items() for p in not_finite(v, f"{at}.{k}" if at else str(k))]
    if isinstance(state, (list, tuple)):
        return [p for i, v in enumerate(state) for p in not_finite(v, f"{at}[{i}]")]
    return []


def check_checkpoint(stack: Stack, names: list[str], runs: list[dict[str, Any]]) -> None:
    """Refuse (``RunDiverged``) the runs' checkpoint entries when one holds a value that is not finite, before any
    is written."""
    for j, run in enumerate(runs):
        bad = not_finite(run)
        if bad:
            s = stack.samples
            raise RunDiverged(
                f"[{names[j]}] the parameters or the optimizer state are not finite at step "
                f"{s // stack.samples_per_step} ({s} samples; {', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}), before the next evaluation point; the Adagrad step size "
                f"{stack.lrs[j]} is likely too large for this model. No checkpoint was written: the last good "
                "one is kept. Restart with a smaller lr (in a new results folder)."
            )


def check_evaluation(stack: Stack, names: list[str], rows: list[dict[str, float]]) -> None:
    """Refuse (``RunDiverged``) an evaluation point where a model's row or parameters are not finite."""
    finite = torch.stack([torch.isfinite(p).reshape(stack.k, -1).all(1) for p in stack.parameters()]).all(0).tolist()
    for j, row in enumerate(rows):
        if not (finite[j] and all(math.isfinite(v) for v in row.values())):
            s = stack.samples
            shown = ", ".join(f"{k} {v}" for k, v in row.items())
            raise RunDiverged(
                f"[{names[j]}] the evaluation or the parameters are not finite at step "
                f"{s // stack.samples_per_step} ({s} samples; {shown}); the Adagrad step size "
                f"{stack.lrs[j]} is likely too large for this model. The last good checkpoint is kept and "
                "nothing was written for this point: restart with a smaller lr (in a new results folder)."
            )
