"""Logged runs to pandas tables beside the paper's values, and a scorecard (Figure 2).

Only logged runs are read (``<results>/runs/<sweep>/<run>/``: ``config.yaml``, ``metrics.csv``,
``status.json``). Runs are grouped into curves by (sweep, dataset, algorithm, nz); runs in one curve must
have the same config except the seed and execution settings, or the table is refused. Several seeds give
a mean and a spread. Incomplete runs (budget not reached) are left out unless asked for.

The paper's curves come from ``vae/reference/paper-figures.csv``: Figures 2 and 3 digitized from the
vector data of the arXiv v10 PDF (±0.2 nats), on a 0.1-decade grid; only points inside the published axes
are used, and values are interpolated linearly in log10(samples) between neighbouring grid points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from vae.config import EXECUTION_KEYS
from vae.runlog import atomic_write_text, read_status

PAPER_CSV = Path(__file__).parent / "reference" / "paper-figures.csv"
PANEL = {"mnist": "MNIST", "frey": "Frey"}
SERIES = {"aevb": "AEVB", "wakesleep": "WS"}
CURVE = ("sweep", "dataset", "algorithm", "nz")


class ReportError(RuntimeError):
    """Runs that cannot be tabulated honestly (mixed configs under one label, or none at all)."""


@dataclass(frozen=True)
class LoggedRun:
    path: Path
    sweep: str
    config: dict[str, Any]
    metrics: pd.DataFrame
    complete: bool

    @property
    def curve(self) -> tuple[Any, ...]:
        return (self.sweep, self.config["dataset"], self.config["algorithm"], self.config["nz"])


def load_runs(results_dir: Path, include_incomplete: bool = False) -> list[LoggedRun]:
    """Every run under ``<results_dir>/runs`` with a config and at least one logged point."""
    runs = []
    for cfg_path in sorted(Path(results_dir).glob("runs/*/*/config.yaml")):
        folder = cfg_path.parent
        if not (folder / "metrics.csv").is_file():
            continue
        config = yaml.safe_load(cfg_path.read_text())
        status = read_status(folder)
        complete = status.get("samples", 0) >= config["samples"]
        if complete or include_incomplete:
            runs.append(LoggedRun(folder, folder.parent.name, config, pd.read_csv(folder / "metrics.csv"), complete))
    return runs


def group_curves(runs: list[LoggedRun]) -> dict[tuple[Any, ...], list[LoggedRun]]:
    """Runs by curve; refuses a curve whose runs differ in anything but seed and execution settings."""
    groups: dict[tuple[Any, ...], list[LoggedRun]] = defaultdict(list)
    for run in runs:
        groups[run.curve].append(run)
    for curve, members in groups.items():
        free = EXECUTION_KEYS | {"seed"}
        first = {k: v for k, v in members[0].config.items() if k not in free}
        for other in members[1:]:
            diff = sorted(k for k, v in other.config.items() if k not in free and first.get(k) != v)
            if diff:
                raise ReportError(
                    f"runs {members[0].path} and {other.path} share the curve {dict(zip(CURVE, curve))} but "
                    f"their configs differ in {diff}; put different configs in different sweeps")
    return dict(groups)


def curve_mean(members: list[LoggedRun], column: str) -> pd.DataFrame:
    """Mean, spread and count over seeds at the points every seed reached."""
    frames = [m.metrics.set_index("samples")[column] for m in members]
    joined = pd.concat(frames, axis=1, join="inner")
    return pd.DataFrame({"elbo": joined.mean(axis=1), "elbo_std": joined.std(axis=1, ddof=1),
                         "seeds": joined.shape[1]}).reset_index()


def load_paper(path: Path = PAPER_CSV) -> pd.DataFrame:
    paper = pd.read_csv(path)
    return paper[paper["within_published_x_range"] == 1]


def paper_value(paper: pd.DataFrame, panel: str, series: str, samples: float) -> float:
    """The paper's curve at ``samples``, interpolated in log10(samples) between neighbouring grid points;
    NaN where the paper shows no value there."""
    pts = paper[(paper["panel"] == panel) & (paper["series"] == series)].sort_values("log10_x")
    x, y = pts["log10_x"].to_numpy(), pts["value"].to_numpy()
    t = math.log10(samples)
    exact = np.isclose(x, t, atol=1e-9)
    if exact.any():
        return float(y[exact][0])
    lo, hi = np.searchsorted(x, t) - 1, np.searchsorted(x, t)
    if lo < 0 or hi >= len(x) or x[hi] - x[lo] > 0.1 + 1e-9:
        return math.nan
    return float(y[lo] + (y[hi] - y[lo]) * (t - x[lo]) / (x[hi] - x[lo]))


def curve_rows(curve: tuple[Any, ...], members: list[LoggedRun], paper: pd.DataFrame,
               points: list[float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Table rows at ``points`` and at the last point reached, and every logged point, for both splits."""
    sweep, dataset, algorithm, nz = curve
    panel = f"{PANEL[dataset]} Nz={nz}"
    table, every = [], []
    wanted = {int(p) for p in points}
    for split in ("train", "test"):
        mean = curve_mean(members, f"{split}/elbo")
        series = f"{SERIES[algorithm]} {split}"
        for _, r in mean.iterrows():
            ref = paper_value(paper, panel, series, r["samples"])
            row = dict(sweep=sweep, dataset=dataset, algorithm=algorithm, nz=nz, split=split,
                       samples=int(r["samples"]), elbo=r["elbo"], elbo_std=r["elbo_std"], seeds=int(r["seeds"]),
                       paper_elbo=ref, delta=r["elbo"] - ref)
            every.append(row)
            if int(r["samples"]) in wanted or r["samples"] == mean["samples"].max():
                table.append(row)
    return table, every


def scorecard(every: pd.DataFrame, tolerance: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per curve and split: is every logged point with a paper value within the tolerance?"""
    rows = []
    for key, g in every.groupby(["sweep", "dataset", "algorithm", "nz", "split"], sort=False):
        compared = g.dropna(subset=["paper_elbo"])
        tol = tolerance[key[1]]
        allowed = tol.get("nats", 0.0) + tol.get("relative", 0.0) * compared["paper_elbo"].abs()
        ok = (compared["delta"].abs() <= allowed)
        rows.append(dict(zip(["sweep", "dataset", "algorithm", "nz", "split"], key),
                         last_samples=int(g["samples"].max()), points_compared=len(compared),
                         worst_delta=compared["delta"].iloc[compared["delta"].abs().argmax()] if len(compared) else math.nan,
                         within_tolerance=bool(ok.all()) if len(compared) else None))
    return pd.DataFrame(rows)


def fig2_runs(results_dir: Path, include_incomplete: bool = False) -> list[LoggedRun]:
    """The Figure 2 runs (MNIST and Frey Face) in curve order; an error if there are none."""
    runs = sorted((r for r in load_runs(results_dir, include_incomplete) if r.config["dataset"] in PANEL),
                  key=lambda r: (r.curve, r.config["seed"]))
    if not runs:
        raise ReportError(f"no {'logged' if include_incomplete else 'complete'} runs under {results_dir}/runs "
                          "(pass --include-incomplete to use unfinished runs)")
    return runs


def write_fig2_tables(results_dir: Path, settings: dict[str, Any], include_incomplete: bool = False) -> pd.DataFrame:
    """``results/tables/fig2.csv``, ``fig2.md``, ``scorecard.csv``, ``scorecard.md`` and ``runs_used.csv``."""
    runs = fig2_runs(results_dir, include_incomplete)
    paper = load_paper()
    table, every = [], []
    for curve, members in group_curves(runs).items():
        t, e = curve_rows(curve, members, paper, settings["table_points"])
        table += t
        every += e
    order = ["sweep", "dataset", "algorithm", "nz"]
    fig2 = pd.DataFrame(table).sort_values(order, kind="stable")
    score = scorecard(pd.DataFrame(every), settings["tolerance"]).sort_values(order, kind="stable")
    out = Path(results_dir) / "tables"
    used = pd.DataFrame([dict(run=str(r.path), sweep=r.sweep, nz=r.config["nz"], seed=r.config["seed"],
                              samples=int(r.metrics["samples"].max()), complete=r.complete) for r in runs])
    for name, df in [("fig2", fig2), ("scorecard", score), ("runs_used", used)]:
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.3f"))
    for name, df in [("fig2", fig2), ("scorecard", score)]:
        atomic_write_text(out / f"{name}.md", df.to_markdown(index=False, floatfmt=".2f") + "\n")
    print(f"tables from {len(runs)} run(s):")
    for r in runs:
        print(f"  {r.path}{'' if r.complete else '  (incomplete)'}")
    print(f"wrote {out}/fig2.csv, fig2.md, scorecard.csv, scorecard.md, runs_used.csv")
    return score
