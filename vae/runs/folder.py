"""A run's folder: its config, metrics, status, checkpoints and lock (the loggers that write into it:
``vae.runs.loggers``).

Every file is written atomically (temporary file, then rename), so a killed run never leaves a torn file, with the
mode the umask gives a new file; the temporary files a kill leaves go when the run is next locked. One process at
a time trains a run: it holds the folder's lock.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_only

from vae.algorithms import ALGORITHMS
from vae.config import Config, migrate
from vae.data import data_dir as default_data_dir
from vae.protocol.schedule import end_of


class ResultsError(RuntimeError):
    """The results folder cannot be written."""


def write_new(tmp: Path, data: bytes) -> Path:
    """Write ``data`` to the new file ``tmp`` (mode 0666 less the umask, as any new file) and fsync it; on failure
    remove it. The first half of every atomic write: the caller renames ``tmp`` over its target."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` at once, through a new file of a unique name beside it (``write_new``)."""
    tmp = write_new(path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp"), data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


CHOOSE = "choose a writable one with --results-dir or make RESULTS=..."  # what to do about an unwritable results folder


@contextmanager
def writing(folder: Path, advice: str = CHOOSE) -> Iterator[None]:
    """Turn a failed write into ``folder`` (read-only, no permission, a full disk) into a one-line ResultsError
    that names the folder, the reason and ``advice``."""
    try:
        yield
    except OSError as e:
        raise ResultsError(f"cannot write to the results folder {folder} ({e.strerror}); {advice}") from None


def check_writable(folder: Path, advice: str = CHOOSE) -> None:
    """Fail before the work, not after it, when ``folder`` cannot be written; where it is missing, its nearest
    existing parent, in which it would be made (nothing is made here)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    with writing(folder, advice), tempfile.TemporaryFile(dir=existing):
        pass


def read_metrics(path: Path) -> pd.DataFrame:
    """A ``metrics.csv``; a ValueError that says why where it is not a table of points with whole-number samples."""
    try:
        metrics = pd.read_csv(path)
    except (UnicodeDecodeError, ValueError) as e:  # pandas' parser and empty-data errors are ValueErrors
        raise ValueError(type(e).__name__) from None
    if "samples" not in metrics or not pd.api.types.is_integer_dtype(metrics["samples"]):
        raise ValueError("no whole-number samples column")
    return metrics


@dataclass(frozen=True)
class Standing:
    """Where a run stands: ``reached``, the samples its ``status.json`` records (written once its checkpoint is;
    after a kill the checkpoint may be ahead, and training continues from it), ``end``, the sample count its
    budget ends at (``vae.protocol.schedule.end_of``), and whether it has a checkpoint to continue from."""

    reached: int
    end: int
    checkpointed: bool

    @property
    def finished(self) -> bool:
        return self.reached >= self.end

    @property
    def stranded(self) -> bool:
        """Results without a checkpoint: training would start from zero."""
        return self.reached > 0 and not self.checkpointed


class RunFolder:
    """``<results>/runs/<sweep>/<run>/``: the only place that names a run's files.

    ``config.yaml`` (the full config), ``metrics.csv`` (one row per evaluation point), ``status.json`` (samples
    reached, step size, selection scores, wall time, the data folder read), ``checkpoints/last.ckpt``, the W&B
    run id in ``wandb_id``, the W&B files of every session in ``wandb/``, ``lock``, locked by the process training
    the run, which writes its PID and host into it, and ``log_px.json``, the importance-sampled log p(x) of the
    last checkpoint.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.sweep, self.name = self.path.parent.name, self.path.name
        self.config_file = self.path / "config.yaml"
        self.metrics_file = self.path / "metrics.csv"
        self.status_file = self.path / "status.json"
        self.checkpoint = self.path / "checkpoints" / "last.ckpt"
        self.wandb_id_file = self.path / "wandb_id"
        self.lock_file = self.path / "lock"
        self.log_px_file = self.path / "log_px.json"
        self.migrations: list[str] = []  # the migrations that ``config`` applied to config.yaml

    @classmethod
    def of(cls, results_dir: str | os.PathLike[str], sweep: str, name: str) -> RunFolder:
        return cls(Path(results_dir) / "runs" / sweep / name)

    @staticmethod
    def all(results_dir: str | os.PathLike[str]) -> list[RunFolder]:
        """Every run folder under ``results_dir`` that holds a config, sorted by path."""
        return [RunFolder(p.parent) for p in sorted(Path(results_dir).glob("runs/*/*/config.yaml"))]

    def check_writable(self) -> None:
        """Fail before training, not after it, when the run folder cannot be written."""
        check_writable(self.path)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process until the block ends; refuse it if another process holds it. The lock
        is the kernel's (``flock``), so it goes with the process however the process ends, even by SIGKILL."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").split() or ["(not yet written)"]
                raise ResultsError(
                    f"{self.path} is being trained by process {' on '.join(holder)}. Wait for it to end, or stop "
                    "it, then run the same command again."
                ) from None
            except OSError as e:  # a file system without flock (some cluster mounts)
                raise ResultsError(
                    f"cannot lock {self.lock_file} ({e.strerror}): choose a results folder on a file "
                    "system with file locks (--results-dir / RESULTS=)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self.remove_stale_files()
            yield
        finally:
            os.close(fd)

    def remove_stale_files(self) -> None:
        """Delete the temporary files of ``atomic_write_text`` that a killed process left beside the files written
        under the lock (``log_px.json`` is written without it, so its are left alone)."""
        for file in (self.config_file, self.metrics_file, self.status_file, self.wandb_id_file):
            for stale in self.path.glob(f"{file.name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def check_outside(self, reference: Path) -> None:
        """Refuse to train into the reference runs: this folder inside ``reference``, however either path is
        spelled (symlinks, ``..``)."""
        if self.path.resolve().is_relative_to(Path(reference).resolve()):
            raise ResultsError(
                f"{self.path} lies in the reference folder {reference}, which no training command "
                "writes to; train into another results folder (--results-dir / make RESULTS=...)"
            )

    def tracked(self) -> bool:
        """Whether git tracks any file of the run (a committed run); false outside a git work tree or without git."""
        try:
            done = subprocess.run(["git", "-C", str(self.path), "ls-files", "-z", "--", "."], capture_output=True)
        except OSError:
            return False
        return done.returncode == 0 and bool(done.stdout)

    def unreadable(self, path: Path, why: str) -> ResultsError:
        return ResultsError(
            f"{path} cannot be read ({why}); put back the run's own file, or delete {self.path} "
            "to train the run again from zero"
        )

    def config(self) -> dict[str, Any] | None:
        """The run's ``config.yaml`` in today's keys (``vae.config.migrate``; the rules applied are left in
        ``migrations``), or None before the run was started."""
        if not self.config_file.is_file():
            return None
        try:
            config = yaml.safe_load(self.config_file.read_text())
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise self.unreadable(self.config_file, type(e).__name__) from None
        if not isinstance(config, dict):
            raise self.unreadable(self.config_file, "not a mapping of config keys")
        config, self.migrations = migrate(config, str(self.config_file))
        return config

    def started_config(self) -> dict[str, Any]:
        """``config`` of a run that was started: a ResultsError where its ``config.yaml`` is missing."""
        config = self.config()
        if config is None:
            raise ResultsError(f"{self.config_file} is missing: {self.path} holds no run that was started")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_file, yaml.safe_dump(config, sort_keys=False))

    def metrics(self) -> pd.DataFrame | None:
        if not self.metrics_file.is_file():
            return None
        try:
            return read_metrics(self.metrics_file)
        except ValueError as e:
            raise self.unreadable(self.metrics_file, str(e)) from None

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """``metrics.csv`` holding ``rows`` (one per point; a metric a row lacks is left empty)."""
        atomic_write_text(self.metrics_file, pd.DataFrame(rows).to_csv(index=False))

    def metrics_departure(self, logged: list[dict[str, Any]], upto: int) -> str | None:
        """How ``metrics.csv`` departs from ``logged``, the rows the run logged up to ``upto`` samples (its
        checkpoint's history), or None where its rows up to there are these; rows beyond ``upto`` are not judged."""
        if not self.metrics_file.is_file():
            return f"it is missing, where {len(logged)} rows were logged" if logged else None
        try:
            metrics = read_metrics(self.metrics_file)
        except ValueError as e:
            return f"it cannot be read ({e})"
        rows = metrics[metrics["samples"] <= upto].to_dict("records")
        for have, want in zip(rows, logged, strict=False):
            if have["samples"] != want["samples"]:
                return f"a row at {have['samples']:,d} samples where {want['samples']:,d} was logged"
            if not same_row(have, want):
                return f"the row at {want['samples']:,d} samples differs from the one logged"
        if len(rows) != len(logged):
            return f"{len(rows)} rows up to {upto:,d} samples, where {len(logged)} were logged"
        return None

    def status(self) -> dict[str, Any]:
        if not self.status_file.is_file():
            return {}
        try:
            status = json.loads(self.status_file.read_text())
        except (UnicodeDecodeError, ValueError) as e:
            raise self.unreadable(self.status_file, type(e).__name__) from None
        if not isinstance(status, dict) or not isinstance(status.get("samples", 0), int):
            raise self.unreadable(self.status_file, "no whole-number samples entry")
        return status

    def data_dir(self) -> Path:
        """The data folder the run's last session trained on (``data_dir`` in ``status.json``) where it still
        exists; else the one training resolves by default (``$VAE_DATA_DIR``, else ``./data``): for a run trained
        before status.json recorded it, moved to another machine, or whose status.json cannot be read."""
        try:
            recorded = self.status().get("data_dir")
        except ResultsError:
            recorded = None
        return Path(recorded) if isinstance(recorded, str) and Path(recorded).is_dir() else default_data_dir()

    def write_status(self, status: dict[str, Any]) -> None:
        atomic_write_text(self.status_file, json.dumps(status, indent=2, sort_keys=True) + "\n")

    def log_px(self) -> dict[str, Any]:
        """The importance-sampled log p(x) of the run's last checkpoint (``vae.results.log_px``), if measured."""
        if not self.log_px_file.is_file():
            return {}
        try:
            return json.loads(self.log_px_file.read_text())
        except (UnicodeDecodeError, ValueError) as e:
            raise self.unreadable(self.log_px_file, type(e).__name__) from None

    def write_log_px(self, result: dict[str, Any]) -> None:
        atomic_write_text(self.log_px_file, json.dumps(result, indent=2, sort_keys=True) + "\n")

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def standing(self, cfg: Config) -> Standing:
        """Where the run stands: its status against ``cfg``'s budget, rounded up to whole iterations once
        (``end_of``)."""
        end = end_of(cfg, ALGORITHMS[cfg.algorithm].step_samples(cfg))
        return Standing(self.status().get("samples", 0), end, self.has_checkpoint())

    def check_resumable(self, standing: Standing) -> None:
        """Refuse an unfinished run whose status is ahead of a missing checkpoint (copied results, a deleted
        checkpoint): training it would start from zero and replace the points it logged."""
        if standing.stranded and not standing.finished:
            raise ResultsError(
                f"{self.path} has reached {standing.reached:,d} samples but has no checkpoint to continue from; put "
                "the checkpoint back, train in another results folder (--results-dir / RESULTS=), or pass --restart "
                "(make RESTART=1) to discard its results and train it again from zero"
            )

    def check_device(self, standing: Standing, device: str) -> None:
        """Refuse to continue on ``device`` (cpu, cuda) a run trained on another kind of device: its checkpoint
        holds that device's random streams, which no other kind of generator can take up. The device is the one
        ``status.json`` records, or, for a run stopped before its first status, its checkpoint's."""
        if not standing.checkpointed or standing.finished:
            return
        recorded = self.status().get("device")
        if recorded is None:
            try:
                recorded = self.checkpoint_axis().get("device", device)
            except ResultsError:
                return  # the verified read that follows says what is wrong with the checkpoint
        recorded = str(recorded).split(":")[0]
        if recorded != device:
            raise ResultsError(
                f"{self.path} was trained on {recorded} and its checkpoint holds {recorded} random streams: it "
                f"continues only on {recorded} (accelerator=), not here on {device}; or train it in another results "
                "folder (--results-dir / RESULTS=)"
            )

    def discard_results(self) -> None:
        """Delete what the run has logged (metrics, status, checkpoints, W&B run, log p(x)), keeping its config."""
        for path in (self.metrics_file, self.status_file, self.wandb_id_file, self.log_px_file):
            path.unlink(missing_ok=True)
        for folder in (self.checkpoint.parent, self.path / "wandb"):
            if folder.is_dir():
                shutil.rmtree(folder)

    def samples_done(self) -> int:
        """Where the run's last checkpoint stands on the sample axis (0 without one)."""
        return int(self.checkpoint_axis()["samples"]) if self.has_checkpoint() else 0

    def checkpoint_axis(self) -> dict[str, Any]:
        """The ``sample_axis`` entry of the run's checkpoint (samples, step size, random stream, ...)."""
        # memory-mapped: only the small "sample_axis" entry is read here
        try:
            checkpoint = torch.load(self.checkpoint, map_location="cpu", weights_only=False, mmap=True)
            return dict(checkpoint["sample_axis"])
        except Exception as e:  # any unreadable file: torch raises many kinds
            raise ResultsError(
                f"{self.checkpoint} cannot be read ({type(e).__name__}); put back this run's "
                f"checkpoint or delete {self.checkpoint.parent} to restart the run from zero"
            ) from None

    def wandb_id(self) -> str:
        """The run's W&B id, made once and kept, so every session of the run logs into one W&B run."""
        if not self.wandb_id_file.is_file():
            atomic_write_text(self.wandb_id_file, secrets.token_hex(4))
        return self.wandb_id_file.read_text().strip()


def same_row(row: dict[str, Any], logged: dict[str, Any]) -> bool:
    """Whether ``row``, read from ``metrics.csv`` (NaN where a metric is missing), holds ``logged``: the same
    metrics, each value equal to the last few digits. (Before pandas 3 the CSV parser was not correctly rounded,
    and a resumed run's logger writes back the rows it read, so older files differ from their runs' histories by
    some units in the last place: up to 1e-13 relative in the reference runs.)"""
    held = {k: v for k, v in row.items() if pd.notna(v)}
    return held.keys() == logged.keys() and all(math.isclose(held[k], v, rel_tol=1e-12) for k, v in logged.items())


def global_rank() -> int:
    """This process's global rank under DDP (0 without DDP), as Lightning's ``rank_zero_only`` knows it."""
    # Lightning sets the attribute on the function (from the environment, then in each DDP process); its
    # overloads do not declare it
    return rank_zero_only.rank  # type: ignore[attr-defined]
