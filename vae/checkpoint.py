"""Atomic, time-based checkpoints: a killed run loses at most ``checkpoint_minutes`` of work."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file in the same folder, fsyncs, then renames over the old checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class PeriodicCheckpoint(L.Callback):
    """Saves ``path`` every ``minutes`` of wall time and when training ends. Under DDP rank 0's clock
    decides for every rank (saving is collective), and only rank 0 writes."""

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
