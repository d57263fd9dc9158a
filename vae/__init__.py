"""A reproduction of Kingma & Welling, Auto-Encoding Variational Bayes (ICLR 2014).

``load_run(path, device)`` gives back a trained run's model (``vae.models.vae.VAE``) and its config; the model's
``data_dir`` is the data folder the run trained on.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from vae.config import Config

try:
    __version__ = version("vae")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    import torch

    from vae.models.vae import VAE


def __getattr__(name: str) -> Any:
    """``vae.VAE``, imported on first use: ``python -m vae`` refuses bad arguments before torch loads."""
    if name == "VAE":
        from vae.models.vae import VAE

        return VAE
    raise AttributeError(f"module 'vae' has no attribute {name!r}")


def load_run(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[VAE, Config]:
    """The trained model of a run folder (``results/runs/<sweep>/<run>``) on ``device``, in eval mode, and its
    config. ``model.data_dir`` is the data folder the run trained on, so that ``load_dataset(cfg, model.data_dir)``
    reads its data again (``RunFolder.data_dir``)."""
    from vae.runs.checkpoint import load_model
    from vae.runs.folder import RunFolder

    folder = RunFolder(path)
    model = load_model(folder).eval().to(device)
    model.data_dir = folder.data_dir()
    return model, model.cfg


__all__ = ["VAE", "__version__", "load_run"]
