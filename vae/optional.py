"""The optional packages, ``wandb`` and ``ray``, imported only where a run uses them: W&B logging (``wandb``
offline or online) and the Ray engine (``--engine ray``). Training with ``wandb=disabled`` on another engine,
``tables``, ``figures --no-wandb``, ``log-px``, ``diagnose`` and ``data`` run without either installed (a GPU
machine that brings only torch and Lightning)."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(RuntimeError):
    """An optional package that this command needs cannot be imported."""


def require(name: str, purpose: str, instead: str) -> ModuleType:
    """Import the optional package ``name``, or say in one line that ``purpose`` needs it and what to do
    ``instead`` without it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MissingDependency(
            f"{purpose} needs the {name} package, which cannot be imported here ({why}); "
            f"install it (pip install {name}) or {instead}"
        ) from None


def require_wandb(
    purpose: str = "W&B logging (wandb=offline/online)", instead: str = "train with --set wandb=disabled"
) -> ModuleType:
    return require("wandb", purpose, instead)


def require_ray() -> ModuleType:
    return require("ray", "--engine ray", "use --engine local or --engine stack")
