"""The paper's curves (Figures 2 and 3), digitized from the vector data of the arXiv v10 PDF (±0.2 nats).

Figure 2 (``vae/paper/fig2_vertices.csv``): every vertex of every curve; each is one evaluation the authors
logged (``kind: evaluation``), except the first, the untrained model at the first iteration (``kind: start``),
from which matplotlib drew a straight line to the first real evaluation (2-5×10⁵ samples). Its value at one of
our points is interpolated (in log10 samples, as the paper's segments are drawn on its log axis) between the
neighbouring evaluations, never before the first or after the last. The paper's train curve is a running
average of minibatch bounds, read beside ours of that kind (split ``train_running``). Figure 3
(``vae/paper/fig3_curves.csv``) is on a 2 M grid, interpolated linearly, never across a gap or outside the
published axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PAPER = Path(__file__).parent.parent / "paper"
PAPER_COLUMNS = ["figure", "panel", "series", "kind", "x_samples_evaluated", "value"]
PANEL = {"mnist": "MNIST", "frey": "Frey"}
SERIES = {"aevb": "AEVB", "wakesleep": "WS", "mcem": "MCEM"}
METRIC = {2: "elbo", 3: "marginal"}
RUNNING = "train_running"  # the split of ``train/running_elbo``, the paper's kind of train curve (Figure 2)


def paper_panel(config: dict[str, Any]) -> tuple[int, str]:
    """(figure, the paper's panel name) of a run's config: Figure 3 when it estimates the marginal likelihood."""
    if config.get("evaluation") == "marginal":
        return 3, f"Ntrain={config['n_train']}"
    return 2, f"{PANEL[config['dataset']]} Nz={config['nz']}"


def paper_series(algorithm: str, split: str) -> str:
    """The paper's series a split is read beside: the running average beside its train curve."""
    return f"{SERIES[algorithm]} {'train' if split == RUNNING else split}"


def load_paper() -> pd.DataFrame:
    """The paper's curves: ``figure, panel, series`` (e.g. ``AEVB test``), ``kind`` (Figure 2: ``evaluation``
    or ``start``; Figure 3: ``grid``), ``x_samples_evaluated`` and ``value``, sorted by x within each curve."""
    fig2 = pd.read_csv(PAPER / "fig2_vertices.csv")
    fig2["series"] = fig2["algorithm"] + " " + fig2["split"]
    fig3 = pd.read_csv(PAPER / "fig3_curves.csv")
    fig3 = fig3[fig3["within_published_x_range"] == 1].assign(kind="grid")
    paper = pd.concat([fig2[PAPER_COLUMNS], fig3[PAPER_COLUMNS]], ignore_index=True)
    return paper.sort_values(["figure", "panel", "series", "x_samples_evaluated"], kind="stable")


def paper_curve(paper: pd.DataFrame, panel: str, series: str, figure: int = 2) -> pd.DataFrame:
    """One curve's measured points (Figure 2: the logged evaluations, not the drawn start)."""
    pts = paper[(paper["figure"] == figure) & (paper["panel"] == panel) & (paper["series"] == series)]
    return pts[pts["kind"] != "start"]


def paper_value(paper: pd.DataFrame, panel: str, series: str, samples: float, figure: int = 2) -> float:
    """The paper's curve at ``samples``; NaN where the paper measured nothing there. Figure 2: interpolated in
    log10(samples) between the evaluations around it, NaN before the first or after the last; Figure 3:
    interpolated in samples between grid points 2 M apart, never across a gap."""
    pts = paper_curve(paper, panel, series, figure)
    x, y = pts["x_samples_evaluated"].to_numpy(), pts["value"].to_numpy()
    if figure == 2:
        if len(x) == 0 or not x[0] <= samples <= x[-1]:
            return math.nan
        return float(np.interp(math.log10(samples), np.log10(x), y))
    x, t = x / 1e6, samples / 1e6
    exact = np.isclose(x, t, atol=1e-6)
    if exact.any():
        return float(y[exact][0])
    lo, hi = np.searchsorted(x, t) - 1, np.searchsorted(x, t)
    if lo < 0 or hi >= len(x) or x[hi] - x[lo] > 2.0 * (1 + 1e-6):
        return math.nan
    return float(y[lo] + (y[hi] - y[lo]) * (t - x[lo]) / (x[hi] - x[lo]))
