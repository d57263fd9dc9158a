"""Where the runs of a sweep execute: one after another in this process ("local"); fanned out as Ray
tasks ("ray"), one run per GPU (or per ``cpus_per_run`` cores) at a time, on this machine or on a cluster;
or stacked ("stack"): runs that can share a stack trained together by one process in the same kernels, the
way to fill one GPU with models this small.

The Figure 2 and 3 sweeps are many small independent runs, so the fast way to use several GPUs is one run
per GPU; a single run uses several GPUs through Lightning DDP instead (``devices``/``num_nodes``). Every
engine calls the same ``train_stack`` (a run alone is a stack of one), so a run writes the same folder
whichever engine trained it, and any engine resumes it. On a cluster, the results and data folders must be
on a file system every node sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from vae.algorithms import ALGORITHMS
from vae.algorithms.stack import STACKED_KEYS
from vae.config import ConfigError, RunSpec, Sweep
from vae.optional import require_ray, require_wandb
from vae.protocol.schedule import check_schedule
from vae.runs.folder import ResultsError, RunFolder, global_rank
from vae.runs.train import check_accelerator, device_type, run_one, say, train_stack

ENGINES = ("local", "ray", "stack")


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed under the engine; the others finished."""


@dataclass(frozen=True)
class Engine:
    kind: str = "local"  # local | ray | stack
    address: str | None = None  # Ray cluster address ("auto", "ray://head:10001"); None starts Ray here
    gpus: int | None = None  # GPUs of a Ray cluster started here (None: Ray detects them)
    gpus_per_run: float = 1.0  # used only where the cluster has GPUs
    cpus_per_run: float = 1.0
    stack_size: int | None = None  # stack engine: models per stack (None: every run that can share one)

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise ConfigError(f"engine {self.kind!r} is not known; choose one of {list(ENGINES)}")
        if self.cpus_per_run <= 0 or self.gpus_per_run <= 0:
            raise ConfigError("cpus_per_run and gpus_per_run must be positive")
        if self.stack_size is not None and self.stack_size < 1:
            raise ConfigError("stack_size must be at least 1")


def run_specs(
    engine: Engine,
    sweep: str,
    specs: list[RunSpec],
    results_dir: Path,
    data_dir: Path | None,
    data: L.LightningDataModule | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every run; returns each run's status by name. ``data`` replaces the datasets of ``data_dir`` (local
    and stack engines: a Ray task loads its own)."""
    if engine.kind == "local":
        return {
            s.name: run_one(sweep, s, results_dir, data_dir, data, position=f"{i}/{len(specs)}")
            for i, s in enumerate(specs, 1)
        }
    if engine.kind == "stack":
        return run_stacked(sweep, specs, results_dir, data_dir, engine.stack_size, data)
    if data is not None:
        raise ConfigError("the ray engine loads the data in each task; give it a data folder, not a datamodule")
    if any(s.config.devices * s.config.num_nodes > 1 for s in specs):
        raise ConfigError(
            "the ray engine runs one single-device run per task; use devices=1 with it, or the "
            "local engine for a DDP run over several devices"
        )
    return _run_ray(
        engine, sweep, specs, Path(results_dir).resolve(), None if data_dir is None else Path(data_dir).resolve()
    )


def stack_groups(
    specs: Sequence[RunSpec], results_dir: Path, sweep: str, stack_size: int | None
) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """(stacks, the rest): runs that may share a stack, grouped by config (all but ``nz`` and ``seed``) and by
    the sample count of their last checkpoint, at most ``stack_size`` per stack; the rest (algorithms that stack
    no models, DDP runs, finished runs) train alone."""
    groups: dict[tuple[Any, ...], list[RunSpec]] = {}
    rest: list[RunSpec] = []
    for spec in specs:
        cfg, folder = spec.config, RunFolder.of(results_dir, sweep, spec.name)
        if not ALGORITHMS[cfg.algorithm].stackable or cfg.devices * cfg.num_nodes > 1 or folder.standing(cfg).finished:
            rest.append(spec)
            continue
        key = tuple((k, repr(v)) for k, v in cfg.to_dict().items() if k not in STACKED_KEYS)
        groups.setdefault(key + (folder.samples_done(),), []).append(spec)
    size = stack_size or max((len(g) for g in groups.values()), default=1)
    stacks = [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]
    return stacks, rest


def run_stacked(
    sweep: str,
    specs: Sequence[RunSpec],
    results_dir: Path,
    data_dir: Path | None = None,
    stack_size: int | None = None,
    data: L.LightningDataModule | None = None,
) -> dict[str, dict[str, Any]]:
    """Train a sweep's runs in stacks; the runs that cannot share one train alone."""
    stacks, rest = stack_groups(specs, results_dir, sweep, stack_size)
    if any(device_type(group[0].config) == "cpu" for group in stacks):
        say(
            "note: --engine stack on a CPU runs each stacked layer model by model, so it trains no faster than "
            "--engine local; stacking pays on a GPU, where k models share each kernel"
        )
    results: dict[str, dict[str, Any]] = {}
    count = len(stacks) + len(rest)
    for i, group in enumerate(stacks, 1):
        say(f"stack: {', '.join(s.name for s in group)}")
        results |= train_stack(sweep, group, results_dir, data_dir, data, position=f"{i}/{count}")
    for i, spec in enumerate(rest, len(stacks) + 1):
        results[spec.name] = run_one(sweep, spec, results_dir, data_dir, data, position=f"{i}/{count}")
    return {s.name: results[s.name] for s in specs}


def _run_ray(
    engine: Engine, sweep: str, specs: list[RunSpec], results_dir: Path, data_dir: Path | None
) -> dict[str, dict[str, Any]]:
    ray = require_ray()
    env = {k: os.environ[k] for k in ("VAE_DATA_DIR", "WANDB_MODE") if k in os.environ}
    ray.init(
        address=engine.address,
        num_gpus=engine.gpus if engine.address is None else None,
        runtime_env={"env_vars": env},
        include_dashboard=False,
        log_to_driver=True,
        ignore_reinit_error=True,
    )
    try:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(run_one).options(
            num_cpus=engine.cpus_per_run, num_gpus=engine.gpus_per_run if has_gpus else 0, max_retries=0
        )
        pending = {
            task.remote(sweep, s, results_dir, data_dir, position=f"{i}/{len(specs)}"): s.name
            for i, s in enumerate(specs, 1)
        }
        results: dict[str, dict[str, Any]] = {}
        failures: dict[str, str] = {}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(done)
            try:
                results[name] = ray.get(done)
            except ray.exceptions.RayTaskError as e:
                failures[name] = str(e.cause if e.cause is not None else e).splitlines()[-1]
        if failures:
            lines = "\n".join(f"  {n}: {msg}" for n, msg in failures.items())
            raise SweepFailed(
                f"{len(failures)} of {len(specs)} run(s) failed (the others finished and are "
                f"saved; rerun the same command to retry the failed ones):\n{lines}"
            )
        return {s.name: results[s.name] for s in specs}
    finally:
        ray.shutdown()


def check_optional(engine: Engine, specs: Sequence[RunSpec]) -> None:
    """Refuse, before anything is written, a sweep that needs an optional package (``vae.optional``) this
    machine cannot import: ``wandb`` for runs logged to W&B, ``ray`` for the Ray engine. Neither is imported
    otherwise."""
    if engine.kind == "ray":
        require_ray()
    if any(s.config.wandb != "disabled" for s in specs):
        require_wandb()


def run_sweep(
    sweep: Sweep,
    results_dir: Path,
    data_dir: Path | None = None,
    only: list[str] | None = None,
    engine: Engine = Engine(),
    data: L.LightningDataModule | None = None,
    restart: bool = False,
    discard_tracked: bool = False,
    reference: Sequence[Path] = (),
) -> dict[str, dict[str, Any]]:
    """Train the sweep's runs (or those named in ``only``) on ``engine`` and print a summary. A run that has
    results but no checkpoint to continue from is refused, or with ``restart`` trained again from zero, unless
    git tracks its files (then ``discard_tracked`` must say so too). Runs in a ``reference`` folder are refused."""
    specs = [s for s in sweep.runs if not only or s.name in only]
    if only and len(specs) != len(only):
        raise ConfigError(f"--only {only}: unknown run name(s); this sweep has {[s.name for s in sweep.runs]}")
    for spec in specs:
        for protected in reference:
            RunFolder.of(results_dir, sweep.name, spec.name).check_outside(protected)
        check_schedule(spec.config, ALGORITHMS[spec.config.algorithm].step_samples(spec.config))
    for cfg in {s.config.accelerator: s.config for s in specs}.values():
        check_accelerator(cfg)
    check_optional(engine, specs)
    for spec in specs if restart and global_rank() == 0 else ():  # DDP: rank 0 before it starts the others
        folder = RunFolder.of(results_dir, sweep.name, spec.name)
        if folder.standing(spec.config).stranded:
            if folder.tracked() and not discard_tracked:
                raise ResultsError(
                    f"{folder.path} holds files that git tracks (a committed run), which --restart "
                    "does not discard; train in another results folder (--results-dir / make "
                    "RESULTS=...)"
                )
            with folder.lock():
                folder.discard_results()
            say(f"[{spec.name}] --restart: discarded its results; training again from zero")
    results = run_specs(engine, sweep.name, specs, results_dir, data_dir, data)
    say(f"\nsweep {sweep.name}: {len(results)} run(s) in {Path(results_dir) / 'runs' / sweep.name}")
    nan = float("nan")
    keys = [
        k
        for k in ("train/elbo", "test/elbo", "train/marginal", "test/marginal")
        if any(k in (st.get("last") or {}) for st in results.values())
    ]
    say(f"{'run':<16}{'samples':>13}{'lr':>7}" + "".join(f"{k:>16}" for k in keys) + f"{'samples/s':>11}")
    for name, st in results.items():
        last = st.get("last") or {}
        say(
            f"{name:<16}{st['samples']:>13,d}{st['lr'] or nan:>7}"
            + "".join(f"{last.get(k, nan):>16.2f}" for k in keys)
            + f"{last.get('time/samples_per_s', nan):>11.0f}"
        )
    return results
