"""Where the runs of a sweep execute: one after another in this process ("local"); fanned out as Ray
tasks ("ray"), one run per GPU (or per ``cpus_per_run`` cores) at a time, on this machine or on a cluster;
or stacked ("stack", ``vae.stack``): the sweep's AEVB runs trained together by one process in batched
kernels, the way to fill one GPU with models this small.

The Figure 2 and 3 sweeps are many small independent runs, so the fast way to use several GPUs is one run
per GPU; a single run uses several GPUs through Lightning DDP instead (``devices``/``num_nodes``). Ray
tasks call the same ``run_one`` as the local loop, so a run writes the same folder either way, and a rerun
resumes it. On a cluster, the results and data folders must be on a file system every node sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae.config import ConfigError, RunSpec, Sweep
from vae.train import run_one, say

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


def run_specs(engine: Engine, sweep: str, specs: list[RunSpec], results_dir: Path,
              data_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Train every run; returns each run's status by name."""
    if engine.kind == "local":
        return {s.name: run_one(sweep, s, results_dir, data_dir) for s in specs}
    if engine.kind == "stack":
        from vae.stack import run_stacked

        return run_stacked(sweep, specs, results_dir, data_dir, engine.stack_size)
    if any(s.config.devices * s.config.num_nodes > 1 for s in specs):
        raise ConfigError("the ray engine runs one single-device run per task; use devices=1 with it, or the "
                          "local engine for a DDP run over several devices")
    return _run_ray(engine, sweep, specs, Path(results_dir).resolve(),
                    None if data_dir is None else Path(data_dir).resolve())


def _run_ray(engine: Engine, sweep: str, specs: list[RunSpec], results_dir: Path,
             data_dir: Path | None) -> dict[str, dict[str, Any]]:
    import ray

    env = {k: os.environ[k] for k in ("VAE_DATA_DIR", "WANDB_MODE") if k in os.environ}
    ray.init(address=engine.address, num_gpus=engine.gpus if engine.address is None else None,
             runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=True,
             ignore_reinit_error=True)
    try:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(run_one).options(
            num_cpus=engine.cpus_per_run, num_gpus=engine.gpus_per_run if has_gpus else 0, max_retries=0)
        pending = {task.remote(sweep, s, results_dir, data_dir): s.name for s in specs}
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
            raise SweepFailed(f"{len(failures)} of {len(specs)} run(s) failed (the others finished and are "
                               f"saved; rerun the same command to retry the failed ones):\n{lines}")
        return {s.name: results[s.name] for s in specs}
    finally:
        ray.shutdown()


def run_sweep(sweep: Sweep, results_dir: Path, data_dir: Path | None = None, only: list[str] | None = None,
              engine: Engine = Engine()) -> dict[str, dict[str, Any]]:
    """Train the sweep's runs (or those named in ``only``) on ``engine`` and print a summary."""
    specs = [s for s in sweep.runs if not only or s.name in only]
    if only and len(specs) != len(only):
        raise ConfigError(f"--only {only}: unknown run name(s); this sweep has {[s.name for s in sweep.runs]}")
    results = run_specs(engine, sweep.name, specs, results_dir, data_dir)
    say(f"\nsweep {sweep.name}: {len(results)} run(s) in {Path(results_dir) / 'runs' / sweep.name}")
    nan = float("nan")
    keys = [k for k in ("train/elbo", "test/elbo", "train/marginal", "test/marginal")
            if any(k in (st.get("last") or {}) for st in results.values())]
    say(f"{'run':<16}{'samples':>13}{'lr':>7}" + "".join(f"{k:>16}" for k in keys) + f"{'samples/s':>11}")
    for name, st in results.items():
        last = st.get("last") or {}
        say(f"{name:<16}{st['samples']:>13,d}{st['lr'] or nan:>7}" + "".join(f"{last.get(k, nan):>16.2f}" for k in keys)
            + f"{last.get('time/samples_per_s', nan):>11.0f}")
    return results
