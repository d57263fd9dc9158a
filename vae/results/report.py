"""Logged runs to pandas tables beside the paper's values, and scorecards (Figures 2 and 3).

Only logged runs are read (``<results>/runs/<sweep>/<run>/``: config, metrics and status). Runs are grouped
into curves by (sweep, dataset, algorithm, nz); runs in one curve must have the same config except the seed
and execution settings, or the table is refused. Several seeds of a curve give, at every point all of them
reached, the mean, the standard deviation, the number of seeds and a 95% Student-t interval of the mean, and
the gap to the paper with the same interval (``delta_ci_low``, ``delta_ci_high``). Incomplete runs
(budget not reached) are left out unless asked for.

The paper's curves come from the vector data of the arXiv v10 PDF (±0.2 nats). Figure 2
(``vae/paper/fig2_vertices.csv``): every vertex of every curve; each is one evaluation the authors logged
(``kind: evaluation``), except the first, the untrained model at the first iteration (``kind: start``), from
which matplotlib drew a straight line to the first real evaluation (2-5×10⁵ samples). Figure 2 is compared
only where the paper measured something: its value at one of our points is interpolated (in log10 samples,
as the paper's segments are drawn on its log axis) between the neighbouring evaluations, never before the
first or after the last; the scorecard compares at the paper's own evaluation points, with our curve
interpolated there the same way, inside the range we logged. The paper's train curve is a running average of
minibatch bounds, so it is compared with ours of that kind (``train/running_elbo``, split ``train_running``)
wherever runs of a curve logged it (over those runs); the fresh evaluation of the training set (split
``train``) is then tabulated beside the paper's train value but not scored. Figure 3
(``vae/paper/fig3_curves.csv``) is on a 2 M grid, interpolated linearly, never across a gap or outside the
published axes.

User runs and the committed reference runs live apart (``results/`` and ``reference/`` by default): the tables of
the user's runs carry the reference's value at the same curve, split and sample count beside the paper's
(``reference_<metric>``, ``delta_reference``); without user runs the reference's own tables are written.

A run belongs to Figure 3 when it estimates the marginal likelihood (``evaluation: marginal``), otherwise
to Figure 2. Sweeps named ``ablation-*`` change the protocol on purpose (e.g. a step size outside the
paper's grid): they never enter the Figure 2/3 tables and scorecards, only ``ablations.csv``, one row per
run, with the keys that vary within the sweep named beside the paper's value, and ``ablations_paper.csv``: per
run and split, how it compares with the paper at the paper's own evaluation points (as the Figure 2 scorecard
does), the mean and the worst difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vae.config import EXECUTION_KEYS, LOGGING_KEYS
from vae.results.paper import METRIC, RUNNING, SERIES, load_paper, paper_curve, paper_series, paper_value
from vae.results.runs import (
    LoggedRun,
    Shown,
    ablation_runs,
    figure_runs,
    group_curves,
    metric_column,
    no_runs,
    splits,
)
from vae.results.statistics import curve_mean, t_half_width
from vae.runs.folder import atomic_write_text


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
            rows.append(dict(sweep=sweep, dataset=dataset, algorithm=algorithm, nz=nz, split=split,
                             samples=float(samples), elbo=float(v), paper_elbo=float(ref), delta=float(v - ref)))
    return rows


def curve_rows(curve: tuple[Any, ...], members: list[LoggedRun], paper: pd.DataFrame,
               points: list[float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
            row = dict(sweep=sweep, dataset=dataset, algorithm=algorithm, **size, nz=nz, split=split,
                       samples=int(r["samples"]), **{metric: r["value"], f"{metric}_std": r["std"]},
                       seeds=int(r["seeds"]), **{f"{metric}_ci_low": r["ci_low"], f"{metric}_ci_high": r["ci_high"],
                                                 f"paper_{metric}": ref},
                       delta=r["value"] - ref, delta_ci_low=r["ci_low"] - ref, delta_ci_high=r["ci_high"] - ref)
            every.append(row)
            if int(r["samples"]) in wanted or r["samples"] == mean["samples"].max():
                table.append(row)
    return table, every


def scorecard(every: pd.DataFrame, compared_at: pd.DataFrame, tolerance: dict[str, dict[str, float]],
              metric: str = "elbo") -> pd.DataFrame:
    """Per curve and split (of ``every``, our logged points): is every comparison in ``compared_at`` (Figure 2:
    at the paper's evaluation points; Figure 3: at our points) within the tolerance?"""
    rows = []
    keys = ["sweep", "dataset", "algorithm", "nz", "split"]
    groups = dict(list(compared_at.groupby(keys, sort=False))) if len(compared_at) else {}
    for key, g in every.groupby(keys, sort=False):
        compared = groups.get(key, compared_at.iloc[:0]).dropna(subset=[f"paper_{metric}"])
        tol = tolerance[key[1]]
        allowed = tol.get("nats", 0.0) + tol.get("relative", 0.0) * compared[f"paper_{metric}"].abs()
        ok = (compared["delta"].abs() <= allowed)
        rows.append(dict(zip(["sweep", "dataset", "algorithm", "nz", "split"], key),
                         last_samples=int(g["samples"].max()), points_compared=len(compared),
                         worst_delta=(compared["delta"].iloc[compared["delta"].abs().argmax()] if len(compared)
                                      else math.nan),
                         within_tolerance=bool(ok.all()) if len(compared) else None))
    return pd.DataFrame(rows)


def log_px_rows(runs: list[LoggedRun], published: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per Figure 2 curve, over its seeds with a measurement: the importance-sampled log p(x), its 95% t
    interval, the bound on the same test images and the gap log p(x) - bound, beside a published number for
    context (``published``: per dataset, a list of ``{source, value}``; the first is shown)."""
    rows = []
    for curve, members in group_curves(runs).items():
        sweep, dataset, algorithm, nz = curve
        m = pd.DataFrame([r.log_px for r in members])
        n, mean, std = len(m), m["log_px"].mean(), m["log_px"].std(ddof=1)
        half = t_half_width(std, n)
        first = (published.get(dataset) or [{"source": "", "value": math.nan}])[0]
        rows.append(dict(sweep=sweep, dataset=dataset, algorithm=algorithm, nz=nz, seeds=n,
                         samples=int(m["samples"].min()), points=int(m["points"].min()), k=int(m["k"].min()),
                         log_px=mean, log_px_std=std, log_px_ci_low=mean - half, log_px_ci_high=mean + half,
                         elbo=m["elbo"].mean(), gap=m["gap"].mean(), published_log_px=first["value"],
                         published_source=first["source"]))
    return rows


def write_log_px_table(folder: Path, runs: list[LoggedRun], settings: dict[str, Any]) -> None:
    """``fig2_log_px.csv`` / ``.md``; the Markdown lists every published number given as context."""
    table = pd.DataFrame(log_px_rows(runs, settings["published"]))
    out = Path(folder) / "tables"
    atomic_write_text(out / "fig2_log_px.csv", table.to_csv(index=False, float_format="%.3f"))
    notes = [f"- {dataset}: {entry['source']}: {entry['value']}" for dataset, entries in settings["published"].items()
             for entry in entries]
    atomic_write_text(out / "fig2_log_px.md", table.drop(columns="published_source").to_markdown(
        index=False, floatfmt=".2f") + "\n\n" + settings["note"].strip() + "\n\n" + "\n".join(notes) + "\n")
    print(f"log p(x) table from {len(runs)} run(s): wrote {out}/fig2_log_px.csv/.md")


def write_tables(shown: Shown, settings: dict[str, Any]) -> None:
    """Every table there are runs for: ``<folder>/tables/fig2*``, ``fig3*`` and ``ablations.*``, with the
    reference runs beside the paper's values."""
    written = 0
    for figure in (2, 3):
        runs = figure_runs(shown.runs, figure)
        if runs:
            write_figure_tables(shown.folder, figure, runs, settings[f"fig{figure}"],
                                figure_runs(shown.reference, figure))
            written += 1
    measured = [r for r in figure_runs(shown.runs, 2) if r.log_px]
    if measured:
        write_log_px_table(shown.folder, measured, settings["log_px"])
    ablations = ablation_runs(shown.runs)
    if ablations:
        write_ablation_table(shown.folder, ablations, settings["ablations"], ablation_runs(shown.reference))
        written += 1
    if not written:
        raise no_runs(shown.folder, shown.include_incomplete)


def beside_reference(ours: pd.DataFrame, reference: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """``ours`` with the reference runs' value at the same ``keys`` (``reference_<metric>``) and the difference
    (``delta_reference``); without reference rows, ``ours`` unchanged."""
    if reference.empty:
        return ours
    ref = reference[keys + [metric]].rename(columns={metric: f"reference_{metric}"})
    out = ours.merge(ref, on=keys, how="left", validate="many_to_one")
    out["delta_reference"] = out[metric] - out[f"reference_{metric}"]
    return out


def ablation_rows(runs: list[LoggedRun], paper: pd.DataFrame, points: list[float]) -> list[dict[str, Any]]:
    """Per run and split, its figure's measure (``metric``: the bound, or the marginal likelihood of Figure 3)
    at ``points`` and at the last point reached, the config keys that vary within the run's sweep
    (``varied``), and the paper's value for the run's panel."""
    rows = []
    for sweep in sorted({r.sweep for r in runs}):
        members = [r for r in runs if r.sweep == sweep]
        keys = sorted(k for k in members[0].config if k not in EXECUTION_KEYS | LOGGING_KEYS
                      and any(m.config[k] != members[0].config[k] for m in members))
        for run in members:
            c, m, metric = run.config, run.metrics, METRIC[run.figure]
            wanted = {int(p) for p in points} | {int(m["samples"].max())}
            for split in ("train", "test"):
                series, column = f"{SERIES[c['algorithm']]} {split}", f"{split}/{metric}"
                for _, r in m[m["samples"].isin(wanted) & m[column].notna()].iterrows():
                    ref = paper_value(paper, run.panel, series, r["samples"], run.figure)
                    rows.append(dict(sweep=sweep, run=run.path.name, dataset=c["dataset"], algorithm=c["algorithm"],
                                     nz=c["nz"], varied=", ".join(f"{k}={c[k]}" for k in keys), split=split,
                                     metric=metric, samples=int(r["samples"]), value=r[column], paper_value=ref,
                                     delta=r[column] - ref))
    return rows


def write_ablation_table(results_dir: Path, runs: list[LoggedRun], settings: dict[str, Any],
                         reference: list[LoggedRun]) -> None:
    paper = load_paper()
    table = pd.DataFrame(ablation_rows(runs, paper, settings["table_points"]))
    table = beside_reference(table, pd.DataFrame(ablation_rows(reference, paper, settings["table_points"])),
                             ["sweep", "run", "split", "samples"], "value")
    out = Path(results_dir) / "tables"
    atomic_write_text(out / "ablations.csv", table.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(out / "ablations.md", table.to_markdown(index=False, floatfmt=".2f") + "\n")
    compared = ablation_at_paper_points(runs, paper)
    atomic_write_text(out / "ablations_paper.csv", compared.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(out / "ablations_paper.md", compared.to_markdown(index=False, floatfmt=".2f") + "\n")
    print(f"Ablation tables from {len(runs)} run(s): wrote {out}/ablations.csv/.md, {out}/ablations_paper.csv/.md")


def ablation_at_paper_points(runs: list[LoggedRun], paper: pd.DataFrame) -> pd.DataFrame:
    """Per ablation run and split, where the Figure 2 and 3 scorecards compare (Figure 2: at the paper's
    evaluations inside the range the run logged, the train curve against the run's running average where it
    logged one; Figure 3: at the run's points where the paper has a value): how many, the mean difference
    ours - paper, the mean absolute difference and the worst one, with the first and last x compared."""
    rows = []
    for run in runs:
        if run.figure == 2:
            found = at_paper_points(run.curve, [run], paper)
        else:  # every logged point of the run, with the paper's value where it has one
            found = [r for r in curve_rows(run.curve, [run], paper, [])[1] if not math.isnan(r["delta"])]
        compared = pd.DataFrame(found, columns=["split", "samples", "delta"])
        for split, points in compared.groupby("split", sort=False):
            worst = points["delta"].abs().argmax()
            rows.append(dict(sweep=run.sweep, run=run.path.name, nz=run.config["nz"], split=split,
                             points=len(points), first=int(points["samples"].min()), last=int(points["samples"].max()),
                             mean_delta=points["delta"].mean(), mean_abs_delta=points["delta"].abs().mean(),
                             worst_delta=points["delta"].iloc[worst], at=int(points["samples"].iloc[worst])))
    return pd.DataFrame(rows)


def write_figure_tables(results_dir: Path, figure: int, runs: list[LoggedRun], settings: dict[str, Any],
                        reference: list[LoggedRun]) -> None:
    """``fig<N>.csv``/``.md`` (rows at ``table_points`` and the last point, beside the ``reference`` runs),
    ``fig<N>_scorecard.csv``/``.md``, ``fig<N>_runs_used.csv`` and, for Figure 3, ``fig3_order.csv``/``.md``."""
    paper = load_paper()
    curves = group_curves(runs)
    table, every, reference_every, at_paper = [], [], [], []
    for curve, members in curves.items():
        t, e = curve_rows(curve, members, paper, settings["table_points"])
        table += t
        every += e
        if figure == 2:  # the scorecard compares at the paper's own evaluation points, never on its drawn start
            at_paper += at_paper_points(curve, members, paper)
    for curve, members in group_curves(reference).items():
        reference_every += curve_rows(curve, members, paper, settings["table_points"])[1]
    metric = METRIC[figure]
    order = ["sweep", "dataset", "algorithm", "nz"]
    main = beside_reference(pd.DataFrame(table), pd.DataFrame(reference_every), order + ["split", "samples"], metric)
    main = main.sort_values(order, kind="stable")
    compared = pd.DataFrame(at_paper, columns=list(every[0])) if figure == 2 else pd.DataFrame(every)
    score = scorecard(pd.DataFrame(every), compared, settings["tolerance"], metric).sort_values(order, kind="stable")
    used = pd.DataFrame([dict(run=str(r.path), sweep=r.sweep, nz=r.config["nz"], seed=r.config["seed"],
                              samples=int(r.metrics["samples"].max()), complete=r.complete) for r in runs])
    frames = {f"fig{figure}": main, f"fig{figure}_scorecard": score}
    if figure == 3:
        frames["fig3_order"] = ordering(pd.DataFrame(every))
    out = Path(results_dir) / "tables"
    for name, df in frames.items():
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.3f"))
        atomic_write_text(out / f"{name}.md", df.to_markdown(index=False, floatfmt=".2f") + "\n")
    atomic_write_text(out / f"fig{figure}_runs_used.csv", used.to_csv(index=False))
    print(f"Figure {figure} tables from {len(runs)} run(s):")
    for r in runs:
        print(f"  {r.path}{'' if r.complete else '  (incomplete)'}")
    print(f"wrote {', '.join(str(out / n) + '.csv/.md' for n in frames)}, {out}/fig{figure}_runs_used.csv")


def ordering(every: pd.DataFrame) -> pd.DataFrame:
    """Figure 3: per training-set size and split (across sweeps), the algorithms ranked by estimated log p(x) at
    the last point all of them reached (each algorithm at its point nearest to it, within 1 %: MCEM's points
    fall on whole iterations of 15·N samples), ours beside the paper's ranking there."""
    rows = []
    for (n_train, split), g in every.groupby(["n_train", "split"], sort=False):
        last = g.groupby("algorithm")["samples"].max().min()
        gap = (g["samples"] - last).abs()
        at = g.loc[gap.groupby(g["algorithm"]).idxmin()]
        at = at[(at["samples"] - last).abs() <= 0.01 * last].set_index("algorithm")
        ours = at["marginal"].sort_values(ascending=False)
        paper = at["paper_marginal"].dropna().sort_values(ascending=False)
        rows.append(dict(n_train=n_train, split=split, samples=int(last),
                         ours=" > ".join(f"{SERIES[a]} {v:.1f}" for a, v in ours.items()),
                         paper=" > ".join(f"{SERIES[a]} {v:.1f}" for a, v in paper.items()),
                         same_order=list(ours.index[ours.index.isin(paper.index)]) == list(paper.index)
                         if len(paper) else None))
    return pd.DataFrame(rows)
