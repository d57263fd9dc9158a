"""Figure 2 redrawn from logged runs, laid out as in the paper, with the paper's curves faintly behind.

Top row: MNIST, Nz = 3, 5, 10, 20, 200; bottom row: the legend, then Frey Face, Nz = 2, 5, 10, 20. Red AEVB,
green wake-sleep; solid train, dashed test; log x-axis "# Training samples evaluated". Several seeds of a
curve are drawn as their mean.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vae.report import PANEL, SERIES, curve_mean, fig2_runs, group_curves, load_paper  # noqa: E402

COLOURS = {"aevb": (1.0, 0.0, 0.0), "wakesleep": (0.0, 0.5, 0.0)}
STYLES = {"train": "-", "test": "--"}
LAYOUT = {"mnist": (0, [3, 5, 10, 20, 200], (-150, -95)), "frey": (1, [2, 5, 10, 20], (0, 1600))}


def figure2(results_dir: Path, out: Path, include_incomplete: bool = False) -> Path:
    """Write ``out/fig2.png`` and ``out/fig2.pdf``; returns the PNG path."""
    curves = group_curves(fig2_runs(results_dir, include_incomplete))
    paper = load_paper()
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.6))
    panels = {}
    for dataset, (row, nzs, ylim) in LAYOUT.items():
        cols = range(5) if row == 0 else range(1, 5)
        for col, nz in zip(cols, nzs):
            ax = axes[row, col]
            panels[(dataset, nz)] = ax
            ax.set_xscale("log")
            ax.set_xlim(1e5, 2.5e8 if dataset == "mnist" else 1e8)
            ax.set_ylim(*ylim)
            ax.set_title(f"{PANEL[dataset] if dataset == 'mnist' else 'Frey Face'}, $N_z$={nz}")
            ax.grid(alpha=0.2)
            for algorithm, series in SERIES.items():
                for split, style in STYLES.items():
                    ref = paper[(paper["panel"] == f"{PANEL[dataset]} Nz={nz}")
                                & (paper["series"] == f"{series} {split}")].sort_values("log10_x")
                    ax.plot(ref["x_samples_evaluated"], ref["value"], style, color=COLOURS[algorithm],
                            alpha=0.25, lw=3)
    for (sweep, dataset, algorithm, nz), members in curves.items():
        ax = panels.get((dataset, nz))
        if ax is None:
            continue
        for split, style in STYLES.items():
            mean = curve_mean(members, f"{split}/elbo")
            ax.plot(mean["samples"], mean["elbo"], style, color=COLOURS[algorithm], lw=1.6)
    axes[0, 0].set_ylabel(r"$\mathcal{L}$")
    axes[1, 1].set_ylabel(r"$\mathcal{L}$")
    axes[0, 0].set_xlabel("# Training samples evaluated")
    legend = axes[1, 0]
    legend.axis("off")
    handles = [Line2D([], [], color=COLOURS[a], ls=STYLES[s], label=f"{n} ({s})")
               for a, n in (("wakesleep", "Wake-Sleep"), ("aevb", "AEVB")) for s in ("test", "train")]
    handles.append(Line2D([], [], color="grey", alpha=0.25, lw=3, label="paper (digitized)"))
    legend.legend(handles=handles, loc="center", frameon=False)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        save(fig, out / f"fig2.{suffix}")
    plt.close(fig)
    return out / "fig2.png"


def save(fig: plt.Figure, path: Path) -> None:
    """Through a temporary file, so an interrupted write never replaces a good figure with a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format=path.suffix[1:], dpi=110)
    os.replace(tmp, path)
