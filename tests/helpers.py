"""Synthetic logged runs for the table and figure tests; a smoke sweep that trains in seconds; the small stacks
of the stack tests; a fixed thread count for numbers compared across processes."""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
import yaml

from vae.config import Config, make_config

# experiments/smoke.yaml (MNIST, Bernoulli decoder, estimator B, step-size selection, Nz = 3 and 20) in seconds
SMOKE = {
    "name": "smoke",
    "base": {
        "dataset": "mnist",
        "hidden": 20,
        "decoder": "bernoulli",
        "estimator": "B",
        "n_train": 1000,
        "budget": 2000,
        "eval_start": 1000,
        "eval_per_decade": 1,
        "lr_select_samples": 1000,
        "adagrad_warmup": 2,
    },
    "grid": {"nz": [3, 20]},
}

# small MNIST models of three latent sizes (padded to 10) and seeds, for the stack tests
STACK_BASE = dict(hidden=50, n_train=1000, lr=0.02, adagrad_warmup=5, eval_batch=700)
STACK_MODELS = [(3, 0), (5, 1), (10, 7)]  # (nz, seed)


def stack_configs(**overrides) -> list[Config]:
    return [make_config({**STACK_BASE, **overrides, "nz": nz, "seed": seed}) for nz, seed in STACK_MODELS]


def fake_run(
    results: Path,
    sweep: str,
    name: str,
    rows: list[tuple[int, float, float]],
    complete: bool = True,
    metric: str = "elbo",
    **config,
) -> Path:
    folder = results / "runs" / sweep / name
    folder.mkdir(parents=True)
    cfg = make_config({"budget": rows[-1][0] if complete else 10**8, **config}).to_dict()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    columns = ["samples", f"train/{metric}", f"test/{metric}"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "metrics.csv", index=False)
    (folder / "status.json").write_text(json.dumps({"samples": rows[-1][0]}))
    return folder


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Torch's threads in this process, and ``OMP_NUM_THREADS`` for the processes it starts, set to ``n``. A
    matrix product split over another number of threads sums in another order and rounds differently, so two
    processes whose numbers are compared must use the same count, whatever the machine's default."""
    old, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
        if env is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = env


def train_args(sweep: Path, results: Path, data_root: Path) -> list[str]:
    """The arguments of ``python -m vae`` that train ``sweep`` into ``results``, reading the data from
    ``data_root``."""
    return ["train", str(sweep), "--results-dir", str(results), "--data-dir", str(data_root)]


def train_command(sweep: Path, results: Path, data_root: Path) -> list[str]:
    """``python -m vae train`` of ``sweep`` into ``results``, reading the data from ``data_root``."""
    return [sys.executable, "-m", "vae", *train_args(sweep, results, data_root)]
