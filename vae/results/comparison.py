"""Our curves beside the paper's (Figures 2 and 3) and beside the committed reference runs.

Several seeds of a curve give, at every point they logged, the mean, the standard deviation, the number of seeds
and a 95% Student-t interval of the mean, and the gap to the paper with the same interval (``delta_ci_low``,
``delta_ci_high``). Figure 2 is compared only where the paper measured something: at the paper's own evaluation
points, with our curve interpolated there in log10 samples inside the range we logged. The paper's train curve
is a running average of minibatch bounds, so it is compared with ours of that kind (``train/running_elbo``,
split ``train_running``) wherever runs of a curve logged it; the fresh evaluation of the training set (split
``train``) is then tabulated beside the paper's train value but not scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vae.results.paper import METRIC, RUNNING, paper_curve, paper_series, paper_value
from vae.results.runs import LoggedRun, metric_column, splits, sweep_name
from vae.results.statistics import curve_mean


def at_paper_points(curve: tuple[Any, ...], members: list[LoggedRun], paper: pd.DataFrame) -> list[dict[str, Any]]:
    """Figure 2: our curve (the mean over seeds) interpolated in log10(samples) at each of the paper's
    evaluation points inside the range we logged, beside the paper's value there: the test curve, and the train
    curve of the paper's kind, the running average where the runs logged it, else the fresh evaluation."""
    sweep, dataset, algorithm, nz = curve
    rows = []
    for split in (RUNNING if RUNNING in splits(members, 2) else "train", "test"):
        ours = curve_mean(members, metric_column(split, "elbo"))
        pts = paper_curve(paper, members[0].panel, paper_series(algorithm, split))
        x = pts["x_samples_evaluated"].to_numpy()
        inside = (x >= ours["samples"].min()) & (x <= ours["samples"].max())
        value = np.interp(np.log10(x[inside]), np.log10(ours["samples"].to_numpy(dtype=float)), ours["value"])
        for samples, v, ref in zip(x[inside], value, pts["value"].to_numpy()[inside], strict=True):
            rows.append(
                dict(
                    sweep=sweep,
                    dataset=dataset,
                    algorithm=algorithm,
                    nz=nz,
                    split=split,
                    samples=float(samples),
                    elbo=float(v),
                    paper_elbo=float(ref),
                    delta=float(v - ref),
                )
            )
    return rows


def curve_rows(
    curve: tuple[Any, ...], members: list[LoggedRun], paper: pd.DataFrame, points: list[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Table rows at ``points`` and at the last point reached, and every logged point, for both splits."""
    sweep, dataset, algorithm, nz = curve
    first = members[0]
    metric = METRIC[first.figure]
    table, every = [], []
    wanted = {int(p) for p in points}
    for split in splits(members, first.figure):
        mean = curve_mean(members, metric_column(split, metric))
        series = paper_series(algorithm, split)
        for _, r in mean.iterrows():
            ref = paper_value(paper, first.panel, series, r["samples"], first.figure)
            size = {"n_train": first.config["n_train"]} if first.figure == 3 else {}
            row = dict(
                sweep=sweep,
                dataset=dataset,
                algorithm=algorithm,
                **size,
                nz=nz,
                split=split,
                samples=int(r["samples"]),
                **{metric: r["value"], f"{metric}_std": r["std"]},
                seeds=int(r["seeds"]),
                **{f"{metric}_ci_low": r["ci_low"], f"{metric}_ci_high": r["ci_high"], f"paper_{metric}": ref},
                delta=r["value"] - ref,
                delta_ci_low=r["ci_low"] - ref,
                delta_ci_high=r["ci_high"] - ref,
            )
            every.append(row)
            if int(r["samples"]) in wanted or r["samples"] == mean["samples"].max():
                table.append(row)
    return table, every


def beside_reference(ours: pd.DataFrame, reference: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """``ours`` with the reference runs' value at the same ``keys`` (``reference_<metric>``) and the difference
    (``delta_reference``), a sweep of a folder in the results folder (``smoke/smoke``) matched by its own name;
    without reference rows, ``ours`` unchanged."""
    if reference.empty:
        return ours
    ref = reference[keys + [metric]].rename(columns={metric: f"reference_{metric}"})
    named = ours.assign(sweep=ours["sweep"].map(sweep_name))
    found = named[keys].merge(ref, on=keys, how="left", validate="many_to_one")
    out = ours.assign(**{f"reference_{metric}": found[f"reference_{metric}"].to_numpy()})
    out["delta_reference"] = out[metric] - out[f"reference_{metric}"]
    return out
