"""The paper's digitized curves as W&B runs in each sweep's group, so that W&B's default line plots (x axis
``samples``, the metrics ``train/elbo``, ``test/elbo``, ``train/marginal``, ``test/marginal``) draw them beside
the sweep's own runs after ``wandb sync``. Figure 2's train curve, a running average of minibatch bounds, is
logged under ``train/running_elbo`` too, beside ours of that kind.

One W&B run per panel and algorithm the sweep trains (e.g. ``paper/MNIST Nz=20 AEVB``), logged once: its
files live in ``<results>/runs/<sweep>/paper/wandb/`` (not a run folder: tables and figures never read it),
and a panel whose W&B files already hold the paper's points is not logged again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from vae.config import Sweep
from vae.optional import require_wandb
from vae.results.paper import METRIC, PANEL, SERIES, load_paper, paper_curve, paper_panel
from vae.runs.loggers import wandb_settings
from vae.runs.wandb_history import durable_steps


def paper_points(paper: pd.DataFrame, figure: int, name: str, algorithm: str) -> pd.DataFrame:
    """The paper's train and test curves of one panel and algorithm, its measured points only, on one
    ``samples`` axis (NaN where only one of them has a point); Figure 2's train curve also as
    ``train/running_elbo``."""
    metric = METRIC[figure]
    curves = []
    for split in ("train", "test"):
        pts = paper_curve(paper, name, f"{SERIES[algorithm]} {split}", figure)
        curves.append(
            pd.Series(
                pts["value"].to_numpy(), index=pts["x_samples_evaluated"].round().astype(int), name=f"{split}/{metric}"
            )
        )
    points = pd.concat(curves, axis=1).sort_index()
    if figure == 2:
        points["train/running_elbo"] = points["train/elbo"]
    return points


def log_paper_curves(sweep: Sweep, results_dir: Path) -> list[str]:
    """Log the paper's curves of every panel the sweep trains into its W&B group (offline or online as its
    runs); returns the W&B run names logged now. A sweep with no run logged to W&B (``wandb: disabled``) logs
    nothing and does not import wandb."""
    panels = {}
    for spec in sweep.runs:
        config = spec.config.to_dict()
        if config["wandb"] != "disabled" and config["dataset"] in PANEL:
            panels[paper_panel(config) + (config["algorithm"],)] = config
    if not panels:
        return []
    wandb = require_wandb("logging the paper's curves to W&B (wandb=offline/online)")
    paper, logged = load_paper(), []
    for (figure, name, algorithm), config in panels.items():
        points = paper_points(paper, figure, name, algorithm)
        if points.empty:
            continue
        title = f"paper/{name} {SERIES[algorithm]}"
        run_id = "paper" + hashlib.sha256(f"{sweep.name}/{title}".encode()).hexdigest()[:12]
        folder = Path(results_dir) / "runs" / sweep.name / "paper"
        if durable_steps(folder / "wandb", run_id):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=config["wandb_project"],
            group=sweep.name,
            name=title,
            id=run_id,
            dir=str(folder),
            mode=config["wandb"],
            settings=wandb_settings(wandb),
            job_type="paper",
            tags=["paper"],
            reinit="create_new",
            config={
                "source": "Kingma & Welling (2014), digitized from the PDF",
                "figure": figure,
                "panel": name,
                "algorithm": algorithm,
            },
        )
        run.define_metric("samples")
        for metric in points.columns:
            run.define_metric(metric, step_metric="samples")
        for samples, row in points.iterrows():
            run.log({"samples": int(samples)} | {k: float(v) for k, v in row.items() if pd.notna(v)}, step=int(samples))
        run.finish()
        logged.append(title)
    return logged
