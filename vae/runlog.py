"""Per-run files under ``results/runs/<sweep>/<run>/``: ``config.yaml``, ``metrics.csv``, ``status.json``.

Every file is written atomically (temporary file, then rename), so a killed run never leaves a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from argparse import Namespace
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class ResultsError(RuntimeError):
    """The results folder cannot be written."""


def check_writable(folder: Path) -> None:
    """Fail before training, not after it, when the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ResultsError(f"cannot write to the results folder {folder} ({e.strerror}); choose a writable "
                           "one with --results-dir or make RESULTS=...") from None


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "status.json", json.dumps(status, indent=2, sort_keys=True) + "\n")


def is_evaluation(metrics: dict[str, float]) -> bool:
    """An evaluation point (not, e.g., the step-size selection record)."""
    return "samples" in metrics and any(k.startswith("train/") for k in metrics)


class RunCSVLogger(Logger):
    """Writes every evaluation point (rows with ``samples`` and a ``train/`` metric) to ``metrics.csv``.

    A point logged again after a resume replaces the rows at or beyond its ``samples``, so the file never
    holds duplicated or stale points.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = (
            pd.read_csv(self.path).to_dict("records") if self.path.is_file() else [])

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The config is written by the runner as config.yaml."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not is_evaluation(metrics):
            return
        self.rows = [r for r in self.rows if r["samples"] < metrics["samples"]] + [dict(metrics)]
        atomic_write_text(self.path, pd.DataFrame(self.rows).to_csv(index=False))


class ResumeSafeWandbLogger(WandbLogger):
    """A WandbLogger that uses ``samples`` as the W&B step and never logs an evaluation point twice.

    Resume is exact, so the points a killed run logged after its last checkpoint come out identical when
    the resumed run reaches them again; ``wandb_logged`` in the run folder records the last point sent,
    and points at or before it are not sent again. The W&B step is the sample count, so the history of a
    resumed run keeps increasing across sessions (and across ``wandb sync`` of their offline folders).
    """

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mark = Path(run_dir) / "wandb_logged"
        self.logged_upto = int(self.mark.read_text()) if self.mark.is_file() else -1

    @property
    def experiment(self) -> Any:
        """This run's own W&B run (``reinit="create_new"``). Lightning's logger would attach to whatever run is
        active in the process, but the stack engine keeps one W&B run per model in one process."""
        if self._experiment is None:
            import wandb

            mode = {"mode": "offline"} if self._offline else {}
            self._experiment = wandb.init(**(self._wandb_init | mode), reinit="create_new")
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "samples" not in metrics or metrics["samples"] <= self.logged_upto:
            return
        self.experiment.log(dict(metrics), step=int(metrics["samples"]))
        if is_evaluation(metrics):
            self.logged_upto = int(metrics["samples"])
            atomic_write_text(self.mark, str(self.logged_upto))
