"""Runs a sweep: one Lightning ``Trainer.fit`` per config, resumable, logged to CSV and W&B.

A run lives in ``<results>/runs/<sweep>/<run>/``. Running the same command again continues every run
from its last checkpoint (or extends a finished one to a larger ``samples`` budget); a run whose stored
config differs from the requested one in anything but execution settings is refused.

With ``devices``/``num_nodes`` above 1 a run is one Lightning DDP job: Lightning starts the other local
ranks by re-running this command (or torchrun / SLURM start them all); every rank runs the same sweep
loop, and only global rank 0 writes the run folder (config, CSV, W&B, checkpoints, status).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.utilities import rank_zero_only

from vae.algorithms import ALGORITHMS
from vae.checkpoint import AtomicCheckpointIO, PeriodicCheckpoint
from vae.config import Config, ConfigError, RunSpec
from vae.runlog import (ResumeSafeWandbLogger, RunCSVLogger, atomic_write_text, check_writable, read_status,
                        write_status)
from vae.schedule import round_up

say = rank_zero_only(print)  # under DDP only global rank 0 reports
STEP_METRICS = ("train/*", "test/*", "lr", "time/*", "lr_select/*")


def check_same_config(run_dir: Path, spec: RunSpec) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text())
    defaults = Config().to_dict()  # a key an earlier version did not write is taken at its default
    diff = {k: (old.get(k, defaults[k]), v) for k, v in spec.config.identity().items()
            if old.get(k, defaults[k]) != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"{run_dir} was started with a different config ({shown}). Resume it with its own config, "
            "give the new config another results folder (--results-dir / RESULTS=), or delete the run folder.")


def wandb_logger(run_dir: Path, sweep: str, spec: RunSpec) -> Any:
    """Offline by default: ``wandb sync <run_dir>/wandb/offline-run-*`` uploads later."""
    id_file = run_dir / "wandb_id"
    if not id_file.is_file():
        atomic_write_text(id_file, secrets.token_hex(4))
    cfg = spec.config
    logger = ResumeSafeWandbLogger(
        run_dir, project=cfg.wandb_project, name=f"{sweep}/{spec.name}", group=sweep, id=id_file.read_text().strip(),
        save_dir=str(run_dir), offline=cfg.wandb == "offline", resume="allow", tags=list(cfg.tags),
        job_type=cfg.algorithm, config=cfg.to_dict(),
    )
    logger.experiment.define_metric("samples")
    for key in STEP_METRICS:
        logger.experiment.define_metric(key, step_metric="samples")
    return logger


def run_one(sweep: str, spec: RunSpec, results_dir: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """Train one run to its budget (or continue it); returns its status."""
    cfg = spec.config
    run_dir = Path(results_dir) / "runs" / sweep / spec.name
    check_same_config(run_dir, spec)
    check_writable(run_dir)
    status = read_status(run_dir)
    if status.get("samples", 0) >= round_up(cfg.samples, cfg.M):
        say(f"[{spec.name}] already at {status['samples']:,d} samples (budget {cfg.samples:,d}): nothing to do")
        return status
    writer = rank_zero_only.rank == 0
    if writer:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    loggers: list[Any] = [RunCSVLogger(run_dir)]
    if cfg.wandb != "disabled" and writer:
        loggers.append(wandb_logger(run_dir, sweep, spec))
    ranks = cfg.devices * cfg.num_nodes
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy="ddp" if ranks > 1 else "auto", max_epochs=-1, logger=loggers,
        callbacks=[PeriodicCheckpoint(ckpt, cfg.checkpoint_minutes)], plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=run_dir,
    )
    model = ALGORITHMS[cfg.algorithm](cfg, data_dir)
    model.run_label = spec.name
    began = time.time()
    try:
        trainer.fit(model, ckpt_path=ckpt if ckpt.is_file() else None)
    finally:
        for logger in loggers[1:]:
            logger.experiment.finish()
    status = {
        "samples": model.samples, "budget": cfg.samples, "lr": model.lr, "lr_selection": model.lr_selection,
        "last": model.history[-1] if model.history else None, "train_seconds": model.train_seconds,
        "wall_seconds": status.get("wall_seconds", 0.0) + time.time() - began,
        "device": str(trainer.strategy.root_device), "ranks": ranks,
    }
    if writer:
        write_status(run_dir, status)
    return status
