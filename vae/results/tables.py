"""Every table there are logged runs for, in ``<folder>/tables/``: Figures 2 and 3, log p(x) and ablations."""

from __future__ import annotations

from typing import Any

from vae.results.ablation_tables import write_ablation_table
from vae.results.figure_tables import write_figure_tables
from vae.results.log_px_table import write_log_px_table
from vae.results.runs import Shown, ablation_runs, figure_runs, no_runs


def write_tables(shown: Shown, settings: dict[str, Any]) -> None:
    """Every table there are runs for: ``<folder>/tables/fig2*``, ``fig3*`` and ``ablations.*``, with the
    reference runs beside the paper's values."""
    written = 0
    for figure in (2, 3):
        runs = figure_runs(shown.runs, figure)
        if runs:
            write_figure_tables(
                shown.folder, figure, runs, settings[f"fig{figure}"], figure_runs(shown.reference, figure)
            )
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
