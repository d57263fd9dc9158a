"""The Figure 2 and 3 tables: our curves at chosen sample counts beside the paper's and the reference runs',
the scorecard against the paper's curves within a tolerance, and Figure 3's ranking of the algorithms.

The tables of the user's runs carry the reference's value at the same curve, split and sample count beside the
paper's (``reference_<metric>``, ``delta_reference``). The Figure 2 scorecard compares at the paper's own
evaluation points, never on its drawn start; Figure 3's at our points where the paper has a value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vae.results.comparison import at_paper_points, beside_reference, curve_rows
from vae.results.markdown import markdown
from vae.results.paper import METRIC, SERIES, load_paper
from vae.results.runs import LoggedRun, group_curves
from vae.runs.folder import atomic_write_text


def scorecard(
    every: pd.DataFrame, compared_at: pd.DataFrame, tolerance: dict[str, dict[str, float]], metric: str = "elbo"
) -> pd.DataFrame:
    """Per curve and split (of ``every``, our logged points): is every comparison in ``compared_at`` (Figure 2:
    at the paper's evaluation points; Figure 3: at our points) within the tolerance?"""
    rows = []
    keys = ["sweep", "dataset", "algorithm", "nz", "split"]
    groups = dict(list(compared_at.groupby(keys, sort=False))) if len(compared_at) else {}
    for key, g in every.groupby(keys, sort=False):
        compared = groups.get(key, compared_at.iloc[:0]).dropna(subset=[f"paper_{metric}"])
        tol = tolerance[key[1]]
        allowed = tol.get("nats", 0.0) + tol.get("relative", 0.0) * compared[f"paper_{metric}"].abs()
        ok = compared["delta"].abs() <= allowed
        rows.append(
            dict(
                zip(["sweep", "dataset", "algorithm", "nz", "split"], key, strict=True),
                last_samples=int(g["samples"].max()),
                points_compared=len(compared),
                worst_delta=(compared["delta"].iloc[compared["delta"].abs().argmax()] if len(compared) else math.nan),
                within_tolerance=bool(ok.all()) if len(compared) else None,
            )
        )
    return pd.DataFrame(rows)


def write_figure_tables(
    results_dir: Path, figure: int, runs: list[LoggedRun], settings: dict[str, Any], reference: list[LoggedRun]
) -> None:
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
    used = pd.DataFrame(
        [
            dict(
                run=str(r.path),
                sweep=r.sweep,
                nz=r.config["nz"],
                seed=r.config["seed"],
                samples=int(r.metrics["samples"].max()),
                complete=r.complete,
            )
            for r in runs
        ]
    )
    frames = {f"fig{figure}": main, f"fig{figure}_scorecard": score}
    if figure == 3:
        frames["fig3_order"] = ordering(pd.DataFrame(every))
    out = Path(results_dir) / "tables"
    for name, df in frames.items():
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.3f"))
        atomic_write_text(out / f"{name}.md", markdown(df) + "\n")
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
        rows.append(
            dict(
                n_train=n_train,
                split=split,
                samples=int(last),
                ours=" > ".join(f"{SERIES[a]} {v:.1f}" for a, v in ours.items()),
                paper=" > ".join(f"{SERIES[a]} {v:.1f}" for a, v in paper.items()),
                same_order=list(ours.index[ours.index.isin(paper.index)]) == list(paper.index) if len(paper) else None,
            )
        )
    return pd.DataFrame(rows)
