"""log p(x) beside the bound for a trained run: above the bound, rising with k, and in the tables."""

import json

import pandas as pd
import pytest

from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.results.log_px_table import log_px_rows
from vae.results.runs import LoggedRun
from vae.runs.train import run_one

TINY = dict(hidden=20, nz=2, n_train=2000, budget=20000, eval_start=5000, lr=0.02, adagrad_warmup=10, wandb="disabled")


def test_log_px_is_above_the_bound_rises_with_k_and_is_tabulated(tmp_path, data_root, capsys):
    run_one("fig2-mnist-aevb", RunSpec("nz2-seed0", make_config(TINY)), tmp_path, data_root)
    run = tmp_path / "runs" / "fig2-mnist-aevb" / "nz2-seed0"
    measured = {}
    for k in (1, 10, 1000):
        assert main(["log-px", str(run), "--data-dir", str(data_root), "--k", str(k), "--points", "300"]) == 0
        measured[k] = json.loads((run / "log_px.json").read_text())
        assert measured[k]["k"] == k and measured[k]["points"] == 300 and measured[k]["samples"] == 20000
    assert abs(measured[1]["log_px"] - measured[1]["elbo"]) < 1.0  # k = 1 is the bound itself, up to the draw
    assert measured[1000]["log_px"] > measured[10]["log_px"] > measured[1]["elbo"]
    assert measured[1000]["gap"] == measured[1000]["log_px"] - measured[1000]["elbo"] > 0
    mtime = (run / "log_px.json").stat().st_mtime_ns
    assert main(["log-px", str(run), "--data-dir", str(data_root), "--k", "1000", "--points", "300"]) == 0
    assert (run / "log_px.json").stat().st_mtime_ns == mtime  # the same measurement is not repeated

    assert main(["tables", "--results-dir", str(tmp_path), "--reference", str(tmp_path / "none")]) == 0
    table = pd.read_csv(tmp_path / "tables" / "fig2_log_px.csv")
    assert len(table) == 1 and table.loc[0, "seeds"] == 1 and table.loc[0, "k"] == 1000
    assert abs(table.loc[0, "log_px"] - measured[1000]["log_px"]) < 1e-3 and table.loc[0, "published_log_px"] == -86.76
    assert "not the same experiment" in (tmp_path / "tables" / "fig2_log_px.md").read_text()


def test_seeds_measured_after_different_budgets_are_never_averaged(tmp_path):
    """A curve whose seeds were measured at 1e7 and at 1e8 gets one row per budget, each over its own seeds."""
    measured = {0: (10**7, -100.0), 1: (10**7, -102.0), 2: (10**8, -95.0)}
    runs = [
        LoggedRun(
            tmp_path / f"nz20-seed{seed}",
            "fig2-mnist-aevb",
            make_config(dict(nz=20, seed=seed)).to_dict(),
            pd.DataFrame(),
            True,
            dict(samples=samples, k=5000, points=1000, log_px=value, elbo=value - 3, gap=3.0),
        )
        for seed, (samples, value) in measured.items()
    ]
    rows = log_px_rows(runs, {"mnist": [{"source": "context", "value": -86.76}]})
    assert [(r["samples"], r["seeds"]) for r in rows] == [(10**7, 2), (10**8, 1)]
    assert rows[0]["log_px"] == pytest.approx(-101.0) and rows[0]["log_px_std"] == pytest.approx(2**0.5)
    assert rows[1]["log_px"] == -95.0 and rows[1]["elbo"] == -98.0
