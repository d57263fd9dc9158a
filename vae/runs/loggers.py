"""The loggers that write a run's evaluation points into its folder: CSV rows (``metrics.csv``) and the run's own
W&B run, each resumed exactly with the run."""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

import pandas as pd
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from vae.config import Config
from vae.optional import require_wandb
from vae.runs.folder import RunFolder
from vae.runs.wandb_history import durable_steps


def is_evaluation(metrics: dict[str, float]) -> bool:
    """An evaluation point (not, e.g., the step-size selection record)."""
    return "samples" in metrics and any(k.startswith("train/") for k in metrics)


class RunCSVLogger(Logger):
    """Writes every evaluation point (rows with ``samples`` and a ``train/`` metric) to ``metrics.csv``.

    A point logged again after a resume replaces the rows at or beyond its ``samples``, so the file never
    holds duplicated or stale points.
    """

    def __init__(self, folder: RunFolder) -> None:
        super().__init__()
        self.folder = folder
        metrics = folder.metrics()
        self.rows: list[dict[str, Any]] = [] if metrics is None else metrics.to_dict("records")

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
        self.folder.write_metrics(self.rows)


class ResumeSafeWandbLogger(Logger):
    """Logs a run to its own W&B run, which holds every point of the run's ``metrics.csv`` exactly once, whatever
    kills it.

    W&B's writer keeps records in memory for a while, so a killed session loses some of what it logged. A point
    counts as sent only once it is on disk: a new session reads the steps its earlier sessions' files hold
    (``vae.runs.wandb_history``) and, before training, sends the CSV rows beyond them. The W&B step is the sample
    count, so the history keeps increasing across sessions (and across ``wandb sync`` of their folders); points
    a resumed run reaches again (resume is exact, so they are identical) are not sent twice.

    ``init`` are the arguments of ``wandb.init``; ``run`` stands in for the W&B run (tests).
    """

    def __init__(self, folder: RunFolder, run: Any = None, **init: Any) -> None:
        super().__init__()
        self.folder, self.init, self.run = folder, init, run
        self.logged_upto = max(durable_steps(folder.path / "wandb", folder.wandb_id()), default=-1)

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str:
        return self.folder.wandb_id()

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The config goes to W&B when its run is made."""

    @property
    def experiment(self) -> Any:
        """This run's own W&B run (``reinit="create_new"``): the stack engine keeps one per model in one
        process."""
        if self.run is None:
            import wandb

            self.run = wandb.init(**self.init, reinit="create_new")
        return self.run

    def send_missing(self) -> None:
        """Send the CSV rows that no earlier session put on disk."""
        metrics = self.folder.metrics()
        if metrics is not None:
            for row in metrics[metrics["samples"] > self.logged_upto].to_dict("records"):
                self.log_metrics({k: v for k, v in row.items() if pd.notna(v)})

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "samples" not in metrics or metrics["samples"] <= self.logged_upto:
            return
        self.experiment.log(dict(metrics), step=int(metrics["samples"]))
        if is_evaluation(metrics):
            self.logged_upto = int(metrics["samples"])


STEP_METRICS = ("train/*", "test/*", "lr", "time/*", "lr_select/*")


def wandb_settings(wandb_module: Any) -> Any:
    """The suite's W&B settings: quiet unless ``WANDB_SILENT=false`` asks for W&B's banners, and no system-stats
    sampler beside these tiny models."""
    silent = os.environ.get("WANDB_SILENT", "true").lower() not in ("false", "0")
    return wandb_module.Settings(silent=silent, x_disable_stats=True)


def run_loggers(folder: RunFolder, config: Config) -> list[Logger]:
    """The run's CSV logger and, unless ``wandb: disabled``, its W&B run: offline by default (``wandb sync
    <run>/wandb/offline-run-*`` uploads later), one W&B group per sweep, ``samples`` as every metric's x-axis.
    wandb is imported only here, so with ``wandb: disabled`` nothing imports it."""
    loggers: list[Logger] = [RunCSVLogger(folder)]
    if config.wandb == "disabled":
        return loggers
    require_wandb()  # a one-line error, not Lightning's, where wandb is missing
    import wandb as wandb_module

    wandb = ResumeSafeWandbLogger(
        folder,
        project=config.wandb_project,
        name=f"{folder.sweep}/{folder.name}",
        group=folder.sweep,
        id=folder.wandb_id(),
        dir=str(folder.path),
        resume="allow",
        tags=list(config.tags),
        job_type=config.algorithm,
        config=config.to_dict(),
        mode=config.wandb,
        settings=wandb_settings(wandb_module),
    )
    wandb.experiment.define_metric("samples")
    for key in STEP_METRICS:
        wandb.experiment.define_metric(key, step_metric="samples")
    wandb.send_missing()
    return loggers + [wandb]
