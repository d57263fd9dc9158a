"""The stack engine (issue 7): the AEVB runs of a sweep trained together, in one process, by one Trainer.

``vae.batched.StackedAEVB`` holds k models as stacked parameters, so one GPU steps all of them in the kernels
one model would use. This module runs such stacks as sweeps. Every run keeps the folder the normal path
(``vae.train.run_one``) writes: ``config.yaml``, ``metrics.csv``, its own W&B run, ``status.json`` and a
``checkpoints/last.ckpt`` in the normal path's format. So a run started by one path can be continued by the
other, and tables and figures cannot tell which path trained it.

Each model follows the normal path's protocol: its own Adagrad step size, picked from ``lr_candidates`` by
the training-set bound after ``lr_select_samples`` (§5); evaluation at the same points with the same noise;
checkpoints every ``checkpoint_minutes`` and at the end. Runs share a stack only when their configs differ
in nothing but ``nz`` and ``seed`` and they stand at the same sample count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from vae.algorithms.aevb import AEVB
from vae.algorithms.base import RunDiverged, Ticks
from vae.batched import StackedAEVB, check_stackable
from vae.checkpoint import AtomicCheckpointIO
from vae.config import Config, ConfigError, RunSpec
from vae.data import load_dataset
from vae.runlog import (
    RunCSVLogger,
    atomic_write_text,
    check_writable,
    read_status,
    write_status,
)
from vae.schedule import round_up, run_points
from vae.train import check_same_config, run_one, say, wandb_logger

STACKED_KEYS = ("nz", "seed")  # what may differ between the models of one stack


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def run_checkpoint(cfg: Config, state: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
    """A model of a stack (``StackedAEVB.model_state``) as the Lightning checkpoint ``run_one`` would have
    written for ``AEVB(cfg)``: built through that module and its own optimizer, so the layout is the same."""
    model = AEVB(cfg)
    model.load_state_dict(state["params"])
    opt = model.adagrad(model)
    opt.set_lr(state["lr"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state["sums"]:
                opt.accumulator(p, cfg.adagrad_eps).copy_(state["sums"][name])
    for group in opt.param_groups:
        group["step"] = state["step"]
    return {
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(), "callbacks": {}, "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [], "hparams_name": None, "hyper_parameters": {"config": cfg.to_dict()},
        "sample_axis": dict(samples=progress["samples"], lr=state["lr"], lr_selection=progress["lr_selection"],
                            history=progress["history"], train_seconds=progress["train_seconds"],
                            rng=state["rng"], perm=state["perm"], pos=state["pos"], chain_state={}),
    }


def read_run_checkpoint(cfg: Config, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inverse of ``run_checkpoint`` for a checkpoint of either path: (model state, progress)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = AEVB(cfg)
    model.load_state_dict(ckpt["state_dict"])
    opt = model.adagrad(model)
    opt.load_state_dict(ckpt["optimizer_states"][0])
    for group in opt.param_groups:
        if not group.get("sum_includes_eps"):
            opt.include_eps(group)
    axis = ckpt["sample_axis"]
    state = dict(params=model.state_dict(), step=opt.param_groups[0]["step"], lr=axis["lr"], rng=axis["rng"],
                 perm=axis["perm"], pos=axis["pos"],
                 sums={name: opt.state[p]["sum"] for name, p in model.named_parameters() if "sum" in opt.state[p]})
    progress = {k: axis[k] for k in ("samples", "lr_selection", "history", "train_seconds")}
    return state, progress


def samples_done(run_dir: Path) -> int:
    """Where the run's last checkpoint stands on the sample axis (0 without one)."""
    path = last_checkpoint(run_dir)
    if not path.is_file():
        return 0
    # memory-mapped: only the small "sample_axis" entry is read here; setup reads the rest
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["sample_axis"]["samples"])


class StackedRuns(L.LightningModule):
    """k AEVB runs of a sweep as one LightningModule: the Figure 2 protocol of ``SampleAxisModule`` for every
    model of a ``StackedAEVB``, each with its own step-size choice, history, loggers and checkpoint."""

    def __init__(self, configs: Sequence[Config], names: Sequence[str], run_dirs: Sequence[Path],
                 loggers: Sequence[Sequence[Any]], data_dir: Path | None = None) -> None:
        super().__init__()
        check_stackable(configs)
        self.automatic_optimization = False
        self.configs, self.names, self.run_dirs = list(configs), list(names), list(run_dirs)
        self.run_loggers = [list(group) for group in loggers]
        self.cfg = configs[0]
        self.data_dir = data_dir
        self.progress = [dict(samples=0, lr_selection={}, history=[], train_seconds=0.0) for _ in configs]

    # ---------------------------------------------------------------- Lightning plumbing
    def setup(self, stage: str) -> None:
        """Data on the device, the stack built there, and every run's last checkpoint loaded into its slot."""
        device = self.trainer.strategy.root_device
        self.train_x, self.test_x = (t.to(device) for t in load_dataset(self.cfg, self.data_dir))
        self.stack = StackedAEVB(self.configs, self.train_x)
        for j, run_dir in enumerate(self.run_dirs):
            if last_checkpoint(run_dir).is_file():
                state, self.progress[j] = read_run_checkpoint(self.configs[j], last_checkpoint(run_dir))
                self.stack.load_model_state(j, state)
        at = {p["samples"] for p in self.progress}
        if len(at) > 1:
            raise ConfigError(f"the runs {self.names} stand at different sample counts {sorted(at)}; a stack needs "
                              "them at the same count (run_stacked groups them so)")
        self.stack.samples = at.pop()
        self.points = run_points(self.cfg, self.cfg.M)
        self.budget = round_up(self.cfg.samples, self.cfg.M)
        self.seconds = 0.0  # training time of this session
        self._since_eval = (self.stack.samples, 0.0)
        self._saved = time.monotonic()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.stack.optimizer

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(Ticks(), batch_size=None)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.cfg.lr is None and self.stack.samples == 0:
            self.select_lr()
        self._evaluate_if_due()
        if self.stack.samples < self.budget:
            target = next(p for p in self.points if p > self.stack.samples)
            self._timed_steps(min(self.cfg.steps_per_call, (target - self.stack.samples) // self.cfg.M))
            self._evaluate_if_due()
        if self.stack.samples >= self.budget:
            self.trainer.should_stop = True
        elif time.monotonic() - self._saved >= self.cfg.checkpoint_minutes * 60:
            self.save()

    def on_train_end(self) -> None:
        self.save()

    def _timed_steps(self, steps: int) -> None:
        start = time.perf_counter()
        self.stack.train_steps(steps)
        spent = time.perf_counter() - start
        self.seconds += spent
        for progress in self.progress:
            progress["train_seconds"] += spent

    def select_lr(self) -> None:
        """§5 for every model at once: each candidate step size trains the whole stack from the same start
        for ``lr_select_samples``; model j continues from the candidate with its best training-set bound,
        so it equals the normal path's run of ``configs[j]``."""
        stack, k = self.stack, len(self.configs)
        start = [stack.model_state(j) for j in range(k)]
        steps = round_up(self.cfg.lr_select_samples, self.cfg.M) // self.cfg.M
        scores: dict[float, list[float]] = {}
        finals: dict[float, list[dict[str, Any]]] = {}
        for lr in self.cfg.lr_candidates:
            for j in range(k):
                stack.load_model_state(j, start[j])
            stack.samples = 0
            stack.optimizer.set_lr(lr)
            began = self.seconds
            self._timed_steps(steps)
            values = stack.evaluate(self.train_x, stack.eval_generators())
            scores[lr] = [v if math.isfinite(v) else -math.inf for v in values]
            finals[lr] = [stack.model_state(j) for j in range(k)]
        self._since_eval = (0, began)  # the first rate counts the winning candidate's time, as run_one's
        for j, name in enumerate(self.names):
            best = max(scores, key=lambda lr: scores[lr][j])
            if scores[best][j] == -math.inf:
                raise RunDiverged(f"[{name}] every Adagrad step size in {list(scores)} diverged during selection; "
                                  "try smaller lr_candidates")
            stack.load_model_state(j, finals[best][j])
            self.progress[j]["lr_selection"] = {str(lr): scores[lr][j] for lr in scores}
            say(f"[{name}] Adagrad step size {best} picked; training-set bound after {stack.samples} samples: "
                + ", ".join(f"{lr}: {scores[lr][j]:.2f}" for lr in scores))
            for logger in self.run_loggers[j]:
                logger.log_metrics({f"lr_select/{lr}": scores[lr][j] for lr in scores}
                                   | {"samples": stack.samples, "lr": best})

    # ---------------------------------------------------------------- evaluation, logging, checkpoints
    def _evaluate_if_due(self) -> None:
        s, history = self.stack.samples, self.progress[0]["history"]
        if s not in self.points or (history and history[-1]["samples"] >= s):
            return
        generators = self.stack.eval_generators()  # one stream per model for train, then test, as run_one
        train, test = (self.stack.evaluate(x, generators) for x in (self.train_x, self.test_x))
        done, secs = self._since_eval
        rate = (s - done) / max(self.seconds - secs, 1e-9)
        self._since_eval = (s, self.seconds)
        finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.stack.parameters()]).all(0).tolist()
        for j, name in enumerate(self.names):
            if not (finite[j] and math.isfinite(train[j]) and math.isfinite(test[j])):
                raise RunDiverged(
                    f"[{name}] the evaluation or the parameters are not finite at {s} samples (train {train[j]}, "
                    f"test {test[j]}); the Adagrad step size {self.stack.optimizer.lr_values[j]} is likely too "
                    "large for this model. The stack stops; every run keeps its last good checkpoint and nothing "
                    "was written for this point: restart with a smaller lr (in a new results folder).")
            progress = self.progress[j]
            progress["samples"] = s
            row = {"samples": s, "train/elbo": train[j], "test/elbo": test[j],
                   "lr": self.stack.optimizer.lr_values[j], "time/train_s": progress["train_seconds"],
                   "time/samples_per_s": rate}
            progress["history"].append(row)
            for logger in self.run_loggers[j]:
                logger.log_metrics(row)
        say(f"[stack of {len(self.names)}] samples {s:>11,d}  test/elbo "
            + "  ".join(f"{n} {v:8.2f}" for n, v in zip(self.names, test, strict=True))
            + f"  {rate * len(self.names):8.0f} samples/s in total")

    def save(self) -> None:
        """Every run's ``checkpoints/last.ckpt``, atomically, in the normal path's format."""
        io = AtomicCheckpointIO()
        for j, (cfg, run_dir) in enumerate(zip(self.configs, self.run_dirs, strict=True)):
            progress = self.progress[j] | {"samples": self.stack.samples}
            io.save_checkpoint(run_checkpoint(cfg, self.stack.model_state(j), progress), last_checkpoint(run_dir))
        self._saved = time.monotonic()


def run_stack(sweep: str, specs: Sequence[RunSpec], results_dir: Path,
              data_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Train the runs ``specs`` (stackable, at the same sample count) as one stack; returns their statuses."""
    configs = [s.config for s in specs]
    check_stackable(configs)
    cfg = configs[0]
    run_dirs = [Path(results_dir) / "runs" / sweep / s.name for s in specs]
    loggers: list[list[Any]] = []
    for spec, run_dir in zip(specs, run_dirs, strict=True):
        check_same_config(run_dir, spec)
        check_writable(run_dir)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(spec.config.to_dict(), sort_keys=False))
        loggers.append([RunCSVLogger(run_dir)]
                       + ([wandb_logger(run_dir, sweep, spec)] if spec.config.wandb != "disabled" else []))
    module = StackedRuns(configs, [s.name for s in specs], run_dirs, loggers, data_dir)
    trainer = L.Trainer(accelerator=cfg.accelerator, devices=1, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=run_dirs[0].parent)
    began = time.time()
    try:
        trainer.fit(module)
    finally:
        for group in loggers:
            for logger in group[1:]:
                logger.experiment.finish()
    statuses = {}
    for j, (spec, run_dir, progress) in enumerate(zip(specs, run_dirs, module.progress, strict=True)):
        history = progress["history"]
        statuses[spec.name] = status = {
            "samples": module.stack.samples, "budget": spec.config.samples, "lr": module.stack.optimizer.lr_values[j],
            "lr_selection": progress["lr_selection"], "last": history[-1] if history else None,
            "train_seconds": progress["train_seconds"],
            "wall_seconds": read_status(run_dir).get("wall_seconds", 0.0) + time.time() - began,
            "device": str(trainer.strategy.root_device), "ranks": 1, "stacked_with": [s.name for s in specs],
        }
        write_status(run_dir, status)
    return statuses


def stack_groups(specs: Sequence[RunSpec], results_dir: Path, sweep: str,
                 stack_size: int | None) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """(stacks, the rest): runs that may share a stack, grouped by config (all but ``nz`` and ``seed``) and by
    the sample count of their last checkpoint, at most ``stack_size`` per stack; the rest (other algorithms,
    DDP runs, finished runs) go to the normal path."""
    groups: dict[tuple[Any, ...], list[RunSpec]] = {}
    rest: list[RunSpec] = []
    for spec in specs:
        cfg, run_dir = spec.config, Path(results_dir) / "runs" / sweep / spec.name
        done = samples_done(run_dir)
        if cfg.algorithm != "aevb" or cfg.devices * cfg.num_nodes > 1 or done >= round_up(cfg.samples, cfg.M):
            rest.append(spec)
            continue
        key = tuple((k, repr(v)) for k, v in cfg.to_dict().items() if k not in STACKED_KEYS) + (done,)
        groups.setdefault(key, []).append(spec)
    size = stack_size or max((len(g) for g in groups.values()), default=1)
    stacks = [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
    return stacks, rest


def run_stacked(sweep: str, specs: Sequence[RunSpec], results_dir: Path, data_dir: Path | None = None,
                stack_size: int | None = None) -> dict[str, dict[str, Any]]:
    """Train a sweep's runs with the stack engine; the runs that cannot be stacked go through ``run_one``."""
    stacks, rest = stack_groups(specs, results_dir, sweep, stack_size)
    results: dict[str, dict[str, Any]] = {}
    for group in stacks:
        say(f"stack: {', '.join(s.name for s in group)}")
        results |= run_stack(sweep, group, results_dir, data_dir)
    for spec in rest:
        results[spec.name] = run_one(sweep, spec, results_dir, data_dir)
    return {s.name: results[s.name] for s in specs}
