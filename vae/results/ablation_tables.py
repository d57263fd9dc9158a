"""The ablation tables: sweeps named ``ablation-*`` change the protocol on purpose (e.g. a step size outside the
paper's grid), so they never enter the Figure 2/3 tables and scorecards. ``ablations.csv``: one row per run,
split and chosen sample count, with the keys that vary within the sweep named beside the paper's value;
``ablations_paper.csv``: per run and split, how it compares with the paper where the Figure 2 and 3
scorecards compare, the mean and the worst difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vae.config import EXECUTION_KEYS, LOGGING_KEYS
from vae.results.comparison import at_paper_points, beside_reference, curve_rows
from vae.results.markdown import markdown
from vae.results.paper import METRIC, SERIES, load_paper, paper_value
from vae.results.runs import LoggedRun
from vae.runs.folder import atomic_write_text


def ablation_rows(runs: list[LoggedRun], paper: pd.DataFrame, points: list[float]) -> list[dict[str, Any]]:
    """Per run and split, its figure's measure (``metric``: the bound, or the marginal likelihood of Figure 3)
    at ``points`` and at the last point reached, the config keys that vary within the run's sweep
    (``varied``), and the paper's value for the run's panel."""
    rows = []
    for sweep in sorted({r.sweep for r in runs}):
        members = [r for r in runs if r.sweep == sweep]
        keys = sorted(
            k
            for k in members[0].config
            if k not in EXECUTION_KEYS | LOGGING_KEYS and any(m.config[k] != members[0].config[k] for m in members)
        )
        for run in members:
            c, m, metric = run.config, run.metrics, METRIC[run.figure]
            wanted = {int(p) for p in points} | {int(m["samples"].max())}
            for split in ("train", "test"):
                series, column = f"{SERIES[c['algorithm']]} {split}", f"{split}/{metric}"
                for _, r in m[m["samples"].isin(wanted) & m[column].notna()].iterrows():
                    ref = paper_value(paper, run.panel, series, r["samples"], run.figure)
                    rows.append(
                        dict(
                            sweep=sweep,
                            run=run.path.name,
                            dataset=c["dataset"],
                            algorithm=c["algorithm"],
                            nz=c["nz"],
                            varied=", ".join(f"{k}={c[k]}" for k in keys),
                            split=split,
                            metric=metric,
                            samples=int(r["samples"]),
                            value=r[column],
                            paper_value=ref,
                            delta=r[column] - ref,
                        )
                    )
    return rows


def write_ablation_table(
    results_dir: Path, runs: list[LoggedRun], settings: dict[str, Any], reference: list[LoggedRun]
) -> None:
    """``ablations.csv``/``.md`` (rows at ``table_points`` and the last point, beside the ``reference`` runs) and
    ``ablations_paper.csv``/``.md``."""
    paper = load_paper()
    table = pd.DataFrame(ablation_rows(runs, paper, settings["table_points"]))
    table = beside_reference(
        table,
        pd.DataFrame(ablation_rows(reference, paper, settings["table_points"])),
        ["sweep", "run", "split", "samples"],
        "value",
    )
    out = Path(results_dir) / "tables"
    atomic_write_text(out / "ablations.csv", table.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(out / "ablations.md", markdown(table) + "\n")
    compared = ablation_at_paper_points(runs, paper)
    atomic_write_text(out / "ablations_paper.csv", compared.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(out / "ablations_paper.md", markdown(compared) + "\n")
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
            rows.append(
                dict(
                    sweep=run.sweep,
                    run=run.path.name,
                    nz=run.config["nz"],
                    split=split,
                    points=len(points),
                    first=int(points["samples"].min()),
                    last=int(points["samples"].max()),
                    mean_delta=points["delta"].mean(),
                    mean_abs_delta=points["delta"].abs().mean(),
                    worst_delta=points["delta"].iloc[worst],
                    at=int(points["samples"].iloc[worst]),
                )
            )
    return pd.DataFrame(rows)
