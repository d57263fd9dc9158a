"""Trains runs: one Lightning ``Trainer.fit`` per stack of runs (a single run is a stack of one), resumable,
logged to each run's CSV and W&B run.

Running the same command again continues every run from its last checkpoint (or extends a finished one to a
larger ``samples`` budget); a run whose stored config differs from the requested one in anything but execution
settings is refused, and so is a run that another process is training (each run folder's lock). SIGINT or SIGTERM
stops the runs within seconds, checkpointed (``vae.runs.signals``): after the current iteration (between blocks
of them under DDP), or between the transitions of an evaluation's HMC chains; before and after the training loop,
the command stops where it is, and every run stays as its last checkpoint left it.

With ``devices``/``num_nodes`` above 1 a run is one Lightning DDP job: Lightning starts the other local ranks
by re-running this command (or torchrun / SLURM start them all); every rank runs the same sweep loop, and only
global rank 0 writes the run folder (config, CSV, W&B, checkpoints, status).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae.algorithms import ALGORITHMS
from vae.config import Config, ConfigError, RunSpec
from vae.data import RunData
from vae.protocol.sample_axis import SampleAxis
from vae.runs.checkpoint import PeriodicCheckpoint, RunCheckpointIO, read_checkpoint
from vae.runs.folder import RunFolder, Standing, global_rank
from vae.runs.interrupted import Interrupted
from vae.runs.loggers import ResumeSafeWandbLogger, run_loggers
from vae.runs.progress import Progress
from vae.runs.signals import StopOnSignal

say = rank_zero_only(print)  # under DDP only global rank 0 reports


def check_same_config(folder: RunFolder, cfg: Config) -> None:
    """Refuse to continue a run folder with a config whose mathematics differ from the one it was started with."""
    old = folder.config()  # migrated: a key an earlier version did not write has the value it trained with
    if old is None:
        return
    if folder.migrations:
        say(
            f"[{folder.name}] its config.yaml predates some keys; read by the migrations: "
            f"{'; '.join(folder.migrations)}"
        )
    diff = {k: (old[k], v) for k, v in cfg.identity().items() if old[k] != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"{folder.path} was started with a different config ({shown}). Resume it with its own config, "
            "give the new config another results folder (--results-dir / RESULTS=), or delete the run folder."
        )


def check_accelerator(cfg: Config) -> None:
    """Refuse an accelerator this machine does not have before anything is written."""
    if cfg.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"accelerator={cfg.accelerator}, but PyTorch sees no CUDA GPU here; use accelerator=auto "
            "(the GPU where there is one) or accelerator=cpu"
        )
    if cfg.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("accelerator=mps, but this machine has no MPS device; use accelerator=auto or cpu")


def device_type(cfg: Config) -> str:
    """The kind of device the run trains on here (cpu, cuda or mps), as Lightning's ``accelerator`` picks it."""
    if cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if cfg.accelerator == "mps" or (cfg.accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def repair_metrics(folder: RunFolder, checkpoint: dict[str, Any]) -> None:
    """Rewrite ``metrics.csv`` from the history of the run's verified ``checkpoint`` where the file departs from it
    (torn, edited, a row lost); its rows beyond the checkpoint go too, to be logged again as the run resumes."""
    axis = checkpoint["sample_axis"]
    problem = folder.metrics_departure(axis["history"], axis["samples"])
    if problem:
        folder.write_metrics(axis["history"])
        print(
            f"[{folder.name}] metrics.csv did not match its checkpoint ({problem}): rewritten from the "
            "checkpoint's history"
        )


def train_stack(
    sweep: str,
    specs: Sequence[RunSpec],
    results_dir: Path,
    data_dir: Path | None = None,
    data: L.LightningDataModule | None = None,
    callbacks: Sequence[L.Callback] = (),
    position: str = "",
) -> dict[str, dict[str, Any]]:
    """Train the runs ``specs`` (configs that differ only in ``nz`` and ``seed``, at the same sample count) as
    one stack to their budget, or continue them; returns each run's status. ``data`` replaces the datasets
    read from ``data_dir``; ``callbacks`` join the Trainer's; ``position`` (``2/5``) places the stack in its
    sweep in the progress display. Global rank 0 holds every run folder's lock meanwhile; a signal stops
    training with every run checkpointed and raises ``Interrupted``."""
    folders = [RunFolder.of(results_dir, sweep, s.name) for s in specs]
    # where each run stands is read here once and decides what trains; what can be refused is, before the run
    # folders are locked and touched
    standings = [f.standing(s.config) for f, s in zip(folders, specs, strict=True)]
    for folder, st in zip(folders, standings, strict=True):
        folder.check_resumable(st)
    if not all(st.finished for st in standings):
        check_accelerator(specs[0].config)
        for folder, st in zip(folders, standings, strict=True):
            folder.check_device(st, device_type(specs[0].config))
        data = data or RunData(specs[0].config, data_dir)
        data.setup("fit")
    with ExitStack() as locks:
        for folder in folders:
            folder.check_writable()
            if global_rank() == 0:
                locks.enter_context(folder.lock())
        progress = Progress(f"{sweep}/{','.join(s.name for s in specs)}", position, specs[0].config.heartbeat_seconds)
        return _train_stack(specs, folders, standings, data, progress, callbacks)


def _train_stack(
    specs: Sequence[RunSpec],
    folders: Sequence[RunFolder],
    standings: Sequence[Standing],
    data: L.LightningDataModule | None,
    progress: Progress,
    callbacks: Sequence[L.Callback],
) -> dict[str, dict[str, Any]]:
    configs = [s.config for s in specs]
    cfg = configs[0]
    for folder, config in zip(folders, configs, strict=True):
        check_same_config(folder, config)
    statuses = {s.name: f.status() for s, f in zip(specs, folders, strict=True)}
    todo = [i for i, st in enumerate(standings) if not st.finished]
    for i in set(range(len(specs))) - set(todo):
        if global_rank() == 0 and folders[i].has_checkpoint():
            repair_metrics(folders[i], read_checkpoint(folders[i]))
        say(
            f"[{specs[i].name}] already at {statuses[specs[i].name]['samples']:,d} samples (budget "
            f"{configs[i].budget:,d}): nothing to do"
        )
    if not todo:
        return statuses
    specs, configs, folders = [specs[i] for i in todo], [configs[i] for i in todo], [folders[i] for i in todo]
    resume = [f.has_checkpoint() for f in folders]
    if any(resume) and not all(resume):
        raise ConfigError(
            f"of the runs {[s.name for s in specs]} only some have a checkpoint; train them one by one (--engine local)"
        )
    # everything in the run folders that can be refused is, before anything is written; a run's metrics.csv that
    # departs from its checkpoint is repaired from it
    checkpoints = RunCheckpointIO(folders)
    if all(resume):
        verified = checkpoints.verify()
        if global_rank() == 0:
            for folder, run in zip(folders, verified["runs"], strict=True):
                repair_metrics(folder, run)
    else:
        for folder in folders:
            folder.metrics()
    stack = ALGORITHMS[cfg.algorithm](configs)
    writer = global_rank() == 0
    loggers = [run_loggers(f, c) if writer else [] for f, c in zip(folders, configs, strict=True)]
    if writer:
        for folder, config in zip(folders, configs, strict=True):
            folder.write_config(config.to_dict())
    module = SampleAxis(stack, [s.name for s in specs], loggers)
    module.display.show, module.display.write = (lambda: progress.show(module)), progress.write
    ranks = cfg.devices * cfg.num_nodes
    began = time.time()
    # the handlers go in before fit, so that a signal during the Trainer's setup stops training too
    with StopOnSignal(folders[0].checkpoint) as stop:
        module.between_blocks = lambda: stop.check(module.trainer)
        # after each eager iteration too, but not under DDP, where each check is a collective
        module.between_steps = module.between_blocks if ranks == 1 else (lambda: None)
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy="ddp" if ranks > 1 else "auto",
            max_epochs=-1,
            logger=False,
            callbacks=[PeriodicCheckpoint(folders[0].checkpoint, cfg.checkpoint_minutes), stop, progress, *callbacks],
            plugins=[checkpoints],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=folders[0].path,
        )
        try:
            trainer.fit(module, datamodule=data, ckpt_path=folders[0].checkpoint if all(resume) else None)
        except SIGTERMException:  # raised at a step's end after the checkpoint was saved: the runs stop here
            stop.signum = stop.signum or signal.SIGTERM  # a DDP rank without a signal of its own stops with rank 0
        finally:
            for group in loggers:
                for logger in group:
                    if isinstance(logger, ResumeSafeWandbLogger):  # each W&B run
                        logger.experiment.finish()
    wall = time.time() - began
    device = trainer.strategy.root_device
    ran_on = kernels(device)
    for j, (spec, folder) in enumerate(zip(specs, folders, strict=True)):
        status = {
            "samples": module.samples,
            "budget": spec.config.budget,
            "lr": module.lrs[j],
            "lr_selection": module.lr_selection[j],
            "last": module.last_evaluation(j),
            "train_seconds": module.time.train_seconds[j],
            "wall_seconds": statuses[spec.name].get("wall_seconds", 0.0) + wall,
            **{
                f"{phase}_seconds": statuses[spec.name].get(f"{phase}_seconds", 0.0) + module.time.clock.totals[phase]
                for phase in ("select", "eval", "checkpoint")
            },
            "device": str(device),
            "kernels": ran_on,
            "ranks": ranks,
            **({"data_dir": str(data.folder)} if isinstance(data, RunData) else {}),
        }
        if len(specs) > 1:
            status["stacked_with"] = [s.name for s in specs]
        if writer:
            folder.write_status(status)
        statuses[spec.name] = status
    if stop.signum:
        selecting = " during the step-size selection (§5), which starts again then" if module.samples == 0 else ""
        raise Interrupted(
            stop.signum,
            f"{signal.Signals(stop.signum).name}: {', '.join(s.name for s in specs)} "
            f"stopped at {module.samples:,d} of {cfg.budget:,d} samples, checkpointed; "
            f"run the same command again to continue{selecting}",
        )
    return statuses


def kernels(device: torch.device) -> str:
    """What rounded this session's arithmetic: the CPU's kernel set and thread count, or the GPU's name. A run
    repeats bit for bit only under the same kernels; elsewhere, trained again from zero, it takes another path."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{torch.backends.cpu.get_cpu_capability()}, threads={torch.get_num_threads()}"


def run_one(
    sweep: str,
    spec: RunSpec,
    results_dir: Path,
    data_dir: Path | None = None,
    data: L.LightningDataModule | None = None,
    callbacks: Sequence[L.Callback] = (),
    position: str = "",
) -> dict[str, Any]:
    """Train one run to its budget (or continue it), as a stack of one; returns its status."""
    return train_stack(sweep, [spec], results_dir, data_dir, data, callbacks, position)[spec.name]
