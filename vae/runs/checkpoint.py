"""Checkpoints of the runs of a stack: one file per run, verified, atomic, written every ``checkpoint_minutes``.

Lightning builds the checkpoint dictionary and calls the module's hooks (``vae.protocol.sample_axis``), which
put one entry per run under ``"runs"``; ``RunCheckpointIO`` writes each run's entry with Lightning's own keys
(version, loops, callbacks) and the run's sweep and name to that run's checkpoint file
(``RunFolder.checkpoint``), and reads them back into one dictionary.

Writing: the runs' checkpoints are serialized in memory, then written with their checksum files
(``<checkpoint>.sha256``) to temporary files beside them and fsynced; only when all are written do the checksum
files, then the checkpoints, replace the old ones by renaming. A failed write (a full disk) removes the
temporary files and leaves every old file as it was. A checksum file lists the SHA-256 of the new checkpoint and
of the one it replaces, so a kill between the two renames leaves a checkpoint that still verifies. New files get
the mode the umask gives (0644 under umask 022).

Reading: a checkpoint must match its checksum file, unpickle, name this run and hold the config identity of the
run folder's ``config.yaml``; otherwise the run stops with a ``ResultsError`` that names the file, and nothing is
changed. A checkpoint without a checksum file (written before checksums existed) gets the other checks only.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae.config import make_config, stored_config
from vae.models.vae import VAE
from vae.runs.folder import ResultsError, RunFolder, write_new

RUN_KEYS = ("state_dict", "optimizer_states", "hyper_parameters", "sample_axis")  # a run's own entries
OWNER = "run"  # the entry naming the run a checkpoint belongs to: {"sweep": ..., "name": ...}
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def checksum_file(checkpoint: Path) -> Path:
    """The file beside ``checkpoint`` that holds its SHA-256 (``<digest>  <name>`` lines)."""
    return checkpoint.with_name(checkpoint.name + ".sha256")


def write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in ``<path>.tmp``, fsynced (``write_new``), to be renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a killed run; a new file takes the umask's mode
    return write_new(tmp, data)


class RunCheckpointIO(TorchCheckpointIO):
    """Splits a stack's checkpoint into its runs' files and joins them again. The ``path`` Lightning passes is
    the first run's checkpoint; the others follow from the run folders."""

    def __init__(self, folders: Sequence[RunFolder]) -> None:
        super().__init__()
        self.folders = list(folders)
        self.digests: dict[Path, str] = {}  # SHA-256 of each checkpoint as last read or written
        self.verified: dict[str, Any] | None = None  # read by ``verify``, handed to Lightning's first load

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any | None = None
    ) -> None:
        common = {k: v for k, v in checkpoint.items() if k != "runs"}
        sums: list[tuple[Path, bytes]] = []
        checkpoints: list[tuple[Path, bytes]] = []
        digests: dict[Path, str] = {}
        for folder, run in zip(self.folders, checkpoint["runs"], strict=True):
            buffer = io.BytesIO()
            torch.save(common | run | {OWNER: {"sweep": folder.sweep, "name": folder.name}}, buffer)
            file = folder.checkpoint
            checkpoints.append((file, buffer.getvalue()))
            digests[file] = hashlib.sha256(checkpoints[-1][1]).hexdigest()
            vouched = dict.fromkeys(d for d in (digests[file], self.digests.get(file)) if d is not None)
            sums.append((checksum_file(file), "".join(f"{d}  {file.name}\n" for d in vouched).encode()))
        files = sums + checkpoints  # the checksum files are renamed into place before the checkpoints
        staged: list[tuple[Path, Path]] = []
        try:
            for target, data in files:
                staged.append((write_temporary(target, data), target))
        except OSError as e:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            if e.errno not in NO_SPACE:
                raise
            need = sum(len(content) for _, content in files)
            raise ResultsError(
                f"cannot write the checkpoint {target}: {e.strerror}. The disk holding {target.parent} is full "
                f"(or a file size limit is reached): the next checkpoint needs {need:,d} bytes "
                f"({need / 2**20:.1f} MiB) there. The last checkpoint is kept and no temporary file is left: free "
                "the space, then rerun the same command to continue from it."
            ) from None
        for tmp, target in staged:
            os.replace(tmp, target)
        self.digests |= digests

    def verify(self) -> dict[str, Any]:
        """Read and check every run's checkpoint now, before anything is written, and return it; Lightning's load
        then takes what was read instead of reading the files again."""
        self.verified = verified = self.load_checkpoint(self.folders[0].checkpoint)
        return verified

    def load_checkpoint(
        self, path: str | os.PathLike[str], map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if self.verified is not None:
            checkpoint, self.verified = self.verified, None
            return checkpoint
        runs = [self.read(folder) for folder in self.folders]
        common = {k: v for k, v in runs[0].items() if k not in (*RUN_KEYS, OWNER)}
        return common | {"runs": [{k: run[k] for k in RUN_KEYS if k in run} for run in runs]}

    def read(self, folder: RunFolder) -> dict[str, Any]:
        """The run's checkpoint, after checking its checksum (where it has a checksum file), that it unpickles,
        that it names this run and that its config identity is the run folder's."""
        path, sums = folder.checkpoint, checksum_file(folder.checkpoint)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if sums.is_file() and digest not in {line.split()[0] for line in sums.read_text().splitlines() if line}:
            refuse(
                folder,
                f"does not match its checksum in {sums.name}: the file is damaged or truncated, or "
                "another file was put in its place",
            )
        try:
            run = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:
            detail = str(e).partition("\n")[0]
            refuse(folder, f"cannot be read ({type(e).__name__}: {detail}); it is truncated or damaged")
        owner = run.get(OWNER, {"sweep": folder.sweep, "name": folder.name})
        if (owner["sweep"], owner["name"]) != (folder.sweep, folder.name):
            refuse(folder, f"is the checkpoint of run {owner['sweep']}/{owner['name']}, not of this run")
        ours = make_config(folder.started_config()).identity()
        theirs = stored_config(run["hyper_parameters"]["config"], f"{path}'s config").identity()
        diff = ", ".join(f"{k}: {theirs[k]!r} there, {v!r} here" for k, v in ours.items() if theirs[k] != v)
        if diff:
            refuse(folder, f"was written with another config than {folder.config_file} ({diff})")
        self.digests[path] = digest
        return run


def read_checkpoint(folder: RunFolder) -> dict[str, Any]:
    """A trained run's last checkpoint, verified (``RunCheckpointIO.read``)."""
    if folder.config() is None or not folder.has_checkpoint():
        raise ResultsError(
            f"{folder.path} has no config and checkpoint: give the folder of a trained run "
            "(results/runs/<sweep>/<run>; the committed reference runs have no checkpoints)"
        )
    return RunCheckpointIO([folder]).read(folder)


def load_model(folder: RunFolder, checkpoint: dict[str, Any] | None = None) -> VAE:
    """The trained model of a run, from its config and its verified last checkpoint (or ``checkpoint``, read
    with ``read_checkpoint``)."""
    checkpoint = checkpoint or read_checkpoint(folder)  # refuses a folder that is not a trained run
    model = VAE(make_config(folder.started_config()))
    model.load_state_dict(checkpoint["state_dict"])
    return model


def refuse(folder: RunFolder, problem: str) -> NoReturn:
    """Stop before anything of the run is changed, saying what is wrong with its checkpoint and what to do."""
    raise ResultsError(
        f"the checkpoint {folder.checkpoint} {problem}. The run's checkpoint and results are left as they are. "
        f"Put this run's own checkpoint back (with {checksum_file(folder.checkpoint).name}), or delete "
        f"{folder.checkpoint.parent} to restart run {folder.sweep}/{folder.name} from zero."
    )


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
