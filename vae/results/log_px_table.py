"""The log p(x) table beside Figure 2's bounds: per curve, the importance-sampled log p(x) of the runs' last
checkpoints (``vae.results.log_px``) over seeds, the bound on the same test images and the gap, beside a
published number for context."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vae.results.markdown import markdown
from vae.results.runs import LoggedRun, group_curves
from vae.results.statistics import t_half_width
from vae.runs.folder import atomic_write_text


def log_px_rows(runs: list[LoggedRun], published: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per Figure 2 curve and measurement (the samples its model was trained on, k and the test images), over
    the seeds measured so: the importance-sampled log p(x), its 95% t interval, the bound on the same test
    images and the gap log p(x) - bound, beside a published number for context (``published``: per dataset, a
    list of ``{source, value}``; the first is shown). Seeds measured after different budgets are never averaged.
    """
    rows = []
    for curve, members in group_curves(runs).items():
        sweep, dataset, algorithm, nz = curve
        first = (published.get(dataset) or [{"source": "", "value": math.nan}])[0]
        measured = pd.DataFrame([r.log_px for r in members])
        for (samples, k, points), m in measured.groupby(["samples", "k", "points"], sort=True):
            n, mean, std = len(m), m["log_px"].mean(), m["log_px"].std(ddof=1)
            half = t_half_width(std, n)
            rows.append(
                dict(
                    sweep=sweep,
                    dataset=dataset,
                    algorithm=algorithm,
                    nz=nz,
                    seeds=n,
                    samples=int(samples),
                    points=int(points),
                    k=int(k),
                    log_px=mean,
                    log_px_std=std,
                    log_px_ci_low=mean - half,
                    log_px_ci_high=mean + half,
                    elbo=m["elbo"].mean(),
                    gap=m["gap"].mean(),
                    published_log_px=first["value"],
                    published_source=first["source"],
                )
            )
    return rows


def write_log_px_table(folder: Path, runs: list[LoggedRun], settings: dict[str, Any]) -> None:
    """``fig2_log_px.csv`` / ``.md``; the Markdown lists every published number given as context."""
    table = pd.DataFrame(log_px_rows(runs, settings["published"]))
    out = Path(folder) / "tables"
    atomic_write_text(out / "fig2_log_px.csv", table.to_csv(index=False, float_format="%.3f"))
    notes = [
        f"- {dataset}: {entry['source']}: {entry['value']}"
        for dataset, entries in settings["published"].items()
        for entry in entries
    ]
    atomic_write_text(
        out / "fig2_log_px.md",
        markdown(table.drop(columns="published_source"))
        + "\n\n"
        + settings["note"].strip()
        + "\n\n"
        + "\n".join(notes)
        + "\n",
    )
    print(f"log p(x) table from {len(runs)} run(s): wrote {out}/fig2_log_px.csv/.md")
