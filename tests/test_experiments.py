"""Every sweep file under experiments/ loads, and each of its runs trains end to end on the real data for a few
iterations: the configs the README's commands use cannot rot. The runs train on the first few hundred
datapoints of each set, read once per data setting and shared, so that a run's time goes to its own code."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from vae.algorithms import ALGORITHMS
from vae.config import Config, RunSpec, load_sweep, make_config
from vae.data import RunData
from vae.runs.train import run_one

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
SWEEPS = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.stem not in ("tables", "figures", "reference_units"))


TEST_POINTS = 200  # of each test set
DATA_KEYS = ("dataset", "n_train", "pixel_scale", "split_seed", "binarize", "binarize_seed")


def tiny(spec: RunSpec) -> RunSpec:
    """The run on a budget of a few iterations: the step size forced to its first candidate (or the config's),
    one evaluation after two iterations, the first max(200, M) training datapoints, the marginal likelihood on 20
    points."""
    cfg = spec.config
    cfg = make_config(dict(cfg.to_dict(), n_train=max(200, cfg.M)))
    step = ALGORITHMS[cfg.algorithm].step_samples(cfg)
    budget = 2 * step
    overrides = dict(
        lr=cfg.lr or cfg.lr_candidates[0],
        budget=budget,
        eval_start=budget,
        eval_every=budget,
        running_every=step if cfg.running_every is not None else None,
        marginal_points=20,
        marginal_burnin=2,
        marginal_samples=4,
        marginal_is_k=10,
        adagrad_warmup=1,
        wandb="disabled",
    )
    return dataclasses.replace(spec, config=make_config(dict(cfg.to_dict(), **overrides)))


@pytest.fixture(scope="module")
def shared_data(data_root):
    """A run's datasets, read once per data setting: its training set and the first TEST_POINTS test points."""
    loaded: dict[tuple, RunData] = {}

    def data(cfg: Config) -> RunData:
        key = tuple(getattr(cfg, k) for k in DATA_KEYS)
        if key not in loaded:
            loaded[key] = RunData(cfg, data_root)
            loaded[key].setup("fit")
            loaded[key].test_x = loaded[key].test_x[:TEST_POINTS]
        return loaded[key]

    return data


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_run_of_every_sweep_file_trains(path, tmp_path, shared_data):
    sweep = load_sweep(path)
    assert sweep.runs, f"{path} expands to no run"
    for spec in sweep.runs:
        run = tiny(spec)
        status = run_one(sweep.name, run, tmp_path, data=shared_data(run.config))
        assert status["samples"] == run.config.budget, spec.name
        logged = pd.read_csv(tmp_path / "runs" / sweep.name / spec.name / "metrics.csv")
        assert logged["samples"].iloc[-1] == run.config.budget
