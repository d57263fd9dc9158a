"""The paper's figures from logged runs: Figures 2 and 3 from the CSVs, Figures 4 and 5 from checkpoints.

Figure 2 is laid out as in the paper, with the paper's curves faintly behind (drawn as published, from every
vertex of the PDF's paths, with a dot where its measurements begin: before it, the paper drew a straight line
from the untrained model) and, when the user's runs are drawn, the committed reference runs thin between
them. Top row: MNIST, Nz = 3, 5, 10, 20, 200; bottom row: the legend, then Frey Face, Nz = 2, 5, 10, 20.
Red AEVB, green wake-sleep; solid train, dashed test, and ours dotted: the running average of minibatch bounds,
the kind of train curve the paper drew (its solid line); log x-axis "# Training samples evaluated". Several
seeds of a curve are drawn as their mean, with its 95% t interval shaded from three seeds on. Figure 3: two
panels (N_train = 1000 and 50000), estimated marginal log-likelihood against millions of training samples
evaluated, MCEM in blue.

Each panel shows the paper's range, widened to hold every point of the user's runs (a short run lies below the
paper's axis) and every run's samples; a curve of runs that still leaves the axis (the reference, whose first
evaluations lie below the paper's range) gets a triangle on the axis edge, in its colour, where it last lies
beyond. The legend tells the user's runs (bold), the reference runs (thin) and the paper (faint) apart; the
reference shown alone is drawn bold, as the runs shown.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from scipy.stats import norm

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from vae.config import ConfigError
from vae.models.vae import VAE
from vae.optional import require_wandb
from vae.results.paper import PANEL, SERIES, load_paper
from vae.results.runs import LoggedRun, Shown, figure_runs, group_curves, metric_column, no_runs, splits
from vae.results.statistics import curve_mean
from vae.runs.checkpoint import load_model
from vae.runs.folder import RunFolder, atomic_write_bytes

COLOURS = {"aevb": (1.0, 0.0, 0.0), "wakesleep": (0.0, 0.5, 0.0), "mcem": (0.0, 0.0, 1.0)}
NAMES = {"wakesleep": "Wake-Sleep", "mcem": "MCEM", "aevb": "AEVB"}
STYLES = {"train": "-", "test": "--"}
RUNNING_STYLE = ":"  # ours, train/running_elbo
LAYOUT = {"mnist": (0, [3, 5, 10, 20, 200], (-150, -95)), "frey": (1, [2, 5, 10, 20], (0, 1600))}


RUN_STYLE: dict[str, Any] = dict(lw=1.6)  # the runs shown: the user's, or the reference shown alone
REFERENCE_STYLE: dict[str, Any] = dict(lw=0.9, alpha=0.55)  # the reference runs behind the user's
PAPER_STYLE: dict[str, Any] = dict(lw=3, alpha=0.25)
FIRST_MEASURED = "o"  # the marker on the paper's first logged evaluation of a Figure 2 curve
BEYOND = {"below": "v", "above": "^"}  # the mark on the axis edge of a curve that leaves it
PAD = 0.03  # the margin beyond a point that widens an axis, as a fraction of the axis range
BAND_SEEDS = 3  # the fewest seeds whose interval is shaded: two seeds' (t = 12.7) hides the curves


@dataclass(frozen=True)
class Drawn:
    """A curve of runs as drawn on a panel: its points, colour and look, and whether the y-axis must hold it."""

    x: np.ndarray
    y: np.ndarray
    colour: tuple[float, ...]
    look: dict[str, Any]
    fit: bool


def figure2(runs: list[LoggedRun], out: Path, reference: list[LoggedRun], users: bool = True) -> Path:
    """Write ``out/fig2.png`` and ``out/fig2.pdf`` from the Figure 2 runs, the ``reference`` runs thin behind
    them; returns the PNG path."""
    return save_both(draw_figure2(runs, reference, users), out, "fig2")


def draw_figure2(runs: list[LoggedRun], reference: list[LoggedRun], users: bool = True) -> plt.Figure:
    """Figure 2 of the runs (the user's, or with ``users`` False the reference shown alone), the ``reference``
    runs thin behind them and the paper's curves faintly behind all."""
    paper = load_paper()
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.6))
    panels = {}
    for dataset, (row, nzs, _) in LAYOUT.items():
        cols = range(5) if row == 0 else range(1, 5)
        for col, nz in zip(cols, nzs, strict=True):
            ax = axes[row, col]
            panels[(dataset, nz)] = ax
            ax.set_xscale("log")
            ax.set_title(f"{PANEL[dataset] if dataset == 'mnist' else 'Frey Face'}, $N_z$={nz}")
            ax.grid(alpha=0.2)
            for algorithm in ("aevb", "wakesleep"):
                series = SERIES[algorithm]
                for split, style in STYLES.items():
                    ref = paper[
                        (paper["figure"] == 2)
                        & (paper["panel"] == f"{PANEL[dataset]} Nz={nz}")
                        & (paper["series"] == f"{series} {split}")
                    ]
                    # as published: from the untrained model at the first iteration, a drawn line to the
                    # first logged evaluation (marked), then one vertex per evaluation
                    ax.plot(ref["x_samples_evaluated"], ref["value"], style, color=COLOURS[algorithm], **PAPER_STYLE)
                    first = ref[ref["kind"] == "evaluation"].iloc[0]
                    ax.plot(
                        first["x_samples_evaluated"],
                        first["value"],
                        FIRST_MEASURED,
                        color=COLOURS[algorithm],
                        alpha=0.5,
                        ms=5,
                    )
    drawn: dict[plt.Axes, list[Drawn]] = defaultdict(list)
    for shown, look, fit in ((reference, REFERENCE_STYLE, False), (runs, RUN_STYLE, users)):
        for (_, dataset, algorithm, nz), members in group_curves(shown).items():
            ax = panels.get((dataset, nz))
            if ax is None:
                continue
            for split in splits(members, 2):
                mean = curve_mean(members, metric_column(split, "elbo"))
                drawn[ax].append(
                    draw_curve(
                        ax, mean["samples"], mean, STYLES.get(split, RUNNING_STYLE), COLOURS[algorithm], look, fit
                    )
                )
    marked = False
    for (dataset, _), ax in panels.items():
        xlim = (1e5, 2.5e8 if dataset == "mnist" else 1e8)
        marked |= fit_panel(ax, xlim, LAYOUT[dataset][2], drawn[ax], log_x=True)
    axes[0, 0].set_ylabel(r"$\mathcal{L}$")
    axes[1, 1].set_ylabel(r"$\mathcal{L}$")
    axes[0, 0].set_xlabel("# Training samples evaluated")
    legend = axes[1, 0]
    legend.axis("off")
    handles = [
        Line2D([], [], color=COLOURS[a], ls=STYLES[s], label=f"{n} ({s})")
        for a, n in (("wakesleep", "Wake-Sleep"), ("aevb", "AEVB"))
        for s in ("test", "train")
    ]
    handles.append(Line2D([], [], color="grey", ls=RUNNING_STYLE, label="ours: train, running average"))
    first = Line2D(
        [], [], color="grey", alpha=0.5, ls="", marker=FIRST_MEASURED, ms=5, label="paper's first measured point"
    )
    legend.legend(
        handles=handles + sources(users, bool(reference)) + [first] + beyond(marked), loc="center", frameon=False
    )
    return fig


def draw_curve(
    ax: plt.Axes, x: Any, mean: Any, style: str, colour: tuple[float, ...], look: dict[str, Any], fit: bool
) -> Drawn:
    """The mean of a curve's seeds as a line, its interval shaded (``band``); returns what was drawn."""
    ax.plot(x, mean["value"], style, color=colour, **look)
    band(ax, x, mean, colour, look)
    return Drawn(np.asarray(x, dtype=float), mean["value"].to_numpy(dtype=float), colour, look, fit)


def band(ax: plt.Axes, x: Any, mean: Any, colour: tuple[float, ...], look: dict[str, Any]) -> None:
    """The 95% t interval of a curve's mean over its seeds, shaded at the points that ``BAND_SEEDS`` seeds or
    more logged: where seeds reached different budgets, up to the last point that enough of them share."""
    where = (mean["seeds"] >= BAND_SEEDS).to_numpy()
    if where.any():
        alpha = 0.18 * look.get("alpha", 1.0)
        ax.fill_between(x, mean["ci_low"], mean["ci_high"], where=where, color=colour, lw=0, alpha=alpha)


def widened(limits: tuple[float, float], values: list[np.ndarray], log: bool = False) -> tuple[float, float]:
    """``limits`` widened to hold every finite one of ``values`` (on a log axis, every positive one), with a
    margin of ``PAD`` of the range beyond a value that widens them (measured in decades on a log axis)."""
    points = np.concatenate([np.ravel(v).astype(float) for v in values] + [np.empty(0)])
    points = points[np.isfinite(points) & ((points > 0) if log else True)]
    if not points.size:
        return limits
    scale, unscale = (np.log10, lambda v: 10**v) if log else (float, float)
    low, high, least, most = (scale(v) for v in (*limits, points.min(), points.max()))
    pad = PAD * (max(high, most) - min(low, least))
    return (
        limits[0] if least >= low else float(unscale(least - pad)),
        limits[1] if most <= high else float(unscale(most + pad)),
    )


def fit_panel(
    ax: plt.Axes, xlim: tuple[float, float], ylim: tuple[float, float], drawn: list[Drawn], log_x: bool = False
) -> bool:
    """Set the panel's axes to the paper's ``xlim`` and ``ylim``, the x-axis widened to every curve drawn and the
    y-axis to those to fit (the user's runs), and mark each curve that still leaves the y-axis (``mark_beyond``);
    returns whether any was marked."""
    ax.set_xlim(*widened(xlim, [d.x for d in drawn], log=log_x))
    ax.set_ylim(*widened(ylim, [d.y for d in drawn if d.fit]))
    marked = [mark_beyond(ax, d) for d in drawn]  # every curve, not only up to the first marked
    return any(marked)


def mark_beyond(ax: plt.Axes, curve: Drawn) -> bool:
    """A triangle on the y-axis edge, in the curve's colour, at the last point where the curve lies beyond it
    (below or above); returns whether the curve got one."""
    low, high = ax.get_ylim()
    marked = False
    for side, beyond, edge in (("below", curve.y < low, low), ("above", curve.y > high, high)):
        if beyond.any():
            ax.plot(
                curve.x[beyond][-1],
                edge,
                BEYOND[side],
                color=curve.colour,
                alpha=curve.look.get("alpha", 1.0),
                ms=7,
                clip_on=False,
                zorder=3,
            )
            marked = True
    return marked


def sources(users: bool, reference: bool) -> list[Line2D]:
    """Legend entries that tell the runs shown (the user's, or the reference shown alone), the reference runs
    behind the user's (where drawn) and the paper's curves apart by their look."""
    handles = [Line2D([], [], color="grey", label="your runs" if users else "reference runs", **RUN_STYLE)]
    if reference:
        handles.append(Line2D([], [], color="grey", label="reference runs", **REFERENCE_STYLE))
    return handles + [Line2D([], [], color="grey", label="paper (digitized)", **PAPER_STYLE)]


def beyond(marked: bool) -> list[Line2D]:
    """The legend entry of the marks of curves that leave the axis, where some curve was marked."""
    return (
        [Line2D([], [], color="grey", ls="", marker=BEYOND["below"], ms=7, label="curve continues beyond the axis")]
        if marked
        else []
    )


FIG3_PANELS = {1000: (60, (-160, -100)), 50000: (68, (-160, -125))}  # x limit (millions), y limits


def figure3(runs: list[LoggedRun], out: Path, reference: list[LoggedRun], users: bool = True) -> Path:
    """Write ``out/fig3.png`` and ``out/fig3.pdf`` from the Figure 3 runs, the ``reference`` runs thin behind
    them; returns the PNG path."""
    return save_both(draw_figure3(runs, reference, users), out, "fig3")


def draw_figure3(runs: list[LoggedRun], reference: list[LoggedRun], users: bool = True) -> plt.Figure:
    """Figure 3 of the runs (the user's, or with ``users`` False the reference shown alone), the ``reference``
    runs thin behind them and the paper's curves faintly behind all."""
    paper = load_paper()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.45]})
    panels = {}
    for ax, n_train in zip(axes, FIG3_PANELS, strict=False):
        panels[n_train] = ax
        ax.set(title=f"$N_{{train}}$ = {n_train}", xlabel="# Training samples evaluated (millions)")
        ax.grid(alpha=0.2)
        for algorithm, series in SERIES.items():
            for split, style in STYLES.items():
                ref = paper[
                    (paper["figure"] == 3)
                    & (paper["panel"] == f"Ntrain={n_train}")
                    & (paper["series"] == f"{series} {split}")
                ].sort_values("x_samples_evaluated")
                ax.plot(ref["x_samples_evaluated"] / 1e6, ref["value"], style, color=COLOURS[algorithm], **PAPER_STYLE)
    axes[0].set_ylabel("Marginal log-likelihood")
    drawn: dict[plt.Axes, list[Drawn]] = defaultdict(list)
    for shown, look, fit in ((reference, REFERENCE_STYLE, False), (runs, RUN_STYLE, users)):
        for (_, _, algorithm, _), members in group_curves(shown).items():
            ax = panels.get(members[0].config["n_train"])
            if ax is None:
                continue
            for split, style in STYLES.items():
                mean = curve_mean(members, f"{split}/marginal")
                drawn[ax].append(draw_curve(ax, mean["samples"] / 1e6, mean, style, COLOURS[algorithm], look, fit))
    marked = False
    for n_train, (xmax, ylim) in FIG3_PANELS.items():
        marked |= fit_panel(panels[n_train], (0, xmax), ylim, drawn[panels[n_train]])
    axes[2].axis("off")
    handles = [
        Line2D([], [], color=COLOURS[a], ls=STYLES[s], label=f"{NAMES[a]} ({s})")
        for a in NAMES
        for s in ("train", "test")
    ]
    axes[2].legend(handles=handles + sources(users, bool(reference)) + beyond(marked), loc="center", frameon=False)
    return fig


def paper_figures(shown: Shown) -> tuple[list[Path], list[Path]]:
    """Figures 2 and 3 in ``<folder>/figures/`` where there are runs for them, with the reference runs behind;
    returns the PNGs and the run folders drawn."""
    written, drawn = [], []
    for figure, draw_figure in ((2, figure2), (3, figure3)):
        runs = figure_runs(shown.runs, figure)
        if runs:
            written.append(
                draw_figure(runs, shown.folder / "figures", figure_runs(shown.reference, figure), shown.users)
            )
            drawn += [r.path for r in runs]
    if not written:
        raise no_runs(shown.folder, shown.include_incomplete)
    return written, drawn


def save_both(fig: plt.Figure, out: Path, name: str) -> Path:
    """Write ``out/<name>.png`` and ``.pdf`` and close the figure; returns the PNG path."""
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        save(fig, out / f"{name}.{suffix}")
    plt.close(fig)
    return out / f"{name}.png"


def save(fig: plt.Figure, path: Path) -> None:
    """At once (``atomic_write_bytes``), so an interrupted write never replaces a good figure with a torn one; PDFs
    carry no creation date, so redrawing from the same logs gives the same bytes."""
    fmt = path.suffix[1:]
    image = io.BytesIO()
    fig.savefig(image, format=fmt, dpi=110, metadata={"CreationDate": None} if fmt == "pdf" else None)
    atomic_write_bytes(path, image.getvalue())


IMAGE_SHAPE = {"mnist": (28, 28), "frey": (28, 20)}


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    _n, h, w = images.shape
    return images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def manifold_grid(n: int) -> torch.Tensor:
    """App. A, Figure 4: cell centres of an n x n grid on the unit square through the Gaussian inverse CDF;
    rows run from high to low z_2, columns from low to high z_1."""
    u = norm.ppf((np.arange(n) + 0.5) / n)
    z1, z2 = np.meshgrid(u, u[::-1])
    return torch.tensor(np.stack([z1.ravel(), z2.ravel()], axis=1), dtype=torch.float32)


def planned_images(results_dir: Path, settings: dict[str, Any]) -> list[tuple[str, VAE, torch.Tensor, int]]:
    """Figure 4 (learned 2-D manifolds) and Figure 5 (random samples, 10 x 10) from the runs named in
    ``settings``: (file name, trained model, latent points, grid side) for each, every model loaded and checked
    before anything is drawn. A run without a checkpoint is skipped with a message."""
    try:
        figure4, figure5, seed = dict(settings["figure4"] or {}), list(settings["figure5"] or []), settings["seed"]
        figure4 = {name: (spec["run"], int(spec["grid"])) for name, spec in figure4.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"the figures settings need seed, figure4 ({{name: {{run, grid}}}}) and figure5 "
            f"(a list of runs), as in experiments/figures.yaml ({type(e).__name__}: {e})"
        ) from None
    plans = []
    for name, (run, grid) in figure4.items():
        model = trained(Path(results_dir) / run)
        if model is not None:
            if model.cfg.nz != 2:
                raise ConfigError(
                    f"Figure 4 draws a 2-D latent space, but {run} has Nz={model.cfg.nz}; name a run "
                    "with nz=2 under figure4 in the figures settings"
                )
            plans.append((f"fig4_{name}.png", model, manifold_grid(grid), grid))
    for run in figure5:
        model = trained(Path(results_dir) / run)
        if model is not None:
            z = torch.randn((100, model.cfg.nz), generator=torch.Generator().manual_seed(seed))
            plans.append((f"fig5_{model.cfg.dataset}_nz{model.cfg.nz}.png", model, z, 10))
    return plans


def image_figures(plans: list[tuple[str, VAE, torch.Tensor, int]], out: Path) -> list[Path]:
    """Draw the planned Figures 4 and 5 into ``out``."""
    return [draw(model, z, n, out / name) for name, model, z, n in plans]


def trained(run_dir: Path) -> VAE | None:
    """The run's trained model from its last checkpoint, or None (with a message) where it has none."""
    folder = RunFolder(run_dir)
    if folder.has_checkpoint():
        return load_model(folder).eval()
    print(f"skipped {run_dir}: no checkpoint (train that run first)")
    return None


def draw(model: VAE, z: torch.Tensor, n: int, path: Path) -> Path:
    """Write the image grid of ``image_figure`` to ``path``; returns it."""
    fig = image_figure(model, z, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path)
    plt.close(fig)
    return path


@torch.no_grad()
def image_figure(model: VAE, z: torch.Tensor, n: int) -> plt.Figure:
    """The mean of p(x|z) for each z (``VAE.decode``) as an n x n grid of images (Figures 4 and 5)."""
    h, w = IMAGE_SHAPE[model.cfg.dataset]
    fig, ax = plt.subplots(figsize=(6 * w / h, 6))
    ax.imshow(tile(model.decode(z).reshape(len(z), h, w).numpy(), n, n), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    fig.tight_layout(pad=0)
    return fig


def log_to_wandb(run_dirs: list[Path], images: dict[str, Path]) -> int:
    """Add the figures to the W&B pages of the runs they were drawn from (offline, like the runs), at
    each run's last logged point; returns how many runs were updated. wandb is imported only where some run
    has a W&B run (not ``wandb: disabled``)."""
    logged = []
    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        cfg = folder.started_config()
        if cfg["wandb"] != "disabled" and folder.wandb_id_file.is_file():
            logged.append((run_dir, folder, cfg))
    if not logged:
        return 0
    wandb = require_wandb("adding the figures to the runs' W&B pages", "pass --no-wandb")
    updated = 0
    for run_dir, folder, cfg in logged:
        metrics = folder.metrics()
        assert metrics is not None  # the run's curve was drawn from it
        last = int(metrics["samples"].max())
        run = wandb.init(
            project=cfg["wandb_project"], id=folder.wandb_id(), dir=str(run_dir), mode=cfg["wandb"], resume="allow"
        )
        run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in images.items()}, step=last)
        run.finish()
        updated += 1
    return updated
