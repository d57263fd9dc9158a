"""Checkpoints of the runs of a stack: one file per run, atomic, written every ``checkpoint_minutes``.

Lightning builds the checkpoint dictionary and calls the module's hooks (``vae.protocol.sample_axis``), which
put one entry per run under ``"runs"``; ``RunCheckpointIO`` writes each run's entry with Lightning's own keys
(version, loops, callbacks) to that run's checkpoint file (``RunFolder.checkpoint``), and reads them back into one
dictionary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae.runs.folder import RunFolder


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunCheckpointIO(TorchCheckpointIO):
    """Splits a stack's checkpoint into its runs' files and joins them again. The ``path`` Lightning passes is
    the first run's checkpoint; the others follow from the run folders."""

    def __init__(self, folders: Sequence[RunFolder]) -> None:
        super().__init__()
        self.folders = list(folders)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        common = {k: v for k, v in checkpoint.items() if k != "runs"}
        for folder, run in zip(self.folders, checkpoint["runs"], strict=True):
            atomic_save(common | run, folder.checkpoint)

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        runs = [torch.load(folder.checkpoint, map_location="cpu", weights_only=False) for folder in self.folders]
        common = {k: v for k, v in runs[0].items() if k not in RUN_KEYS}
        return common | {"runs": [{k: run[k] for k in RUN_KEYS if k in run} for run in runs]}


RUN_KEYS = ("state_dict", "optimizer_states", "hyper_parameters", "sample_axis")  # a run's own entries


class PeriodicCheckpoint(L.Callback):
    """Saves the runs every ``minutes`` of wall time and when training ends. Under DDP rank 0's clock decides
    for every rank (saving is collective), and only rank 0 writes."""

    def __init__(self, path: Path, minutes: float) -> None:
        self.path = Path(path)
        self.seconds = minutes * 60.0
        self.last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        due = time.monotonic() - self.last >= self.seconds
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)
        if due:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self.last = time.monotonic()
