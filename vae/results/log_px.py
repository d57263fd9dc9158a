"""log p(x) beside the lower bound for trained runs: importance sampling with the encoder as proposal.

The paper reports lower bounds only (Figure 2); models are compared today by an importance-sampled estimate
of log p(x). For a run's last checkpoint this estimates, on the first ``points`` test images,

    log p(x) ≈ log (1/k) Σ_j p(x, z_j) / q(z_j|x),  z_j ~ q(z|x)   (k samples; rises towards log p(x) with k)

and the bound (eq. 10, one sample of z per image, estimator B) on the same images, and writes both with the
gap to the run folder's ``log_px.json``, which ``make tables`` turns into ``fig2_log_px.csv``. The sampling shows
its progress (``vae.runs.progress.Meter``) every ``heartbeat_seconds`` of the run's config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vae.config import ConfigError
from vae.data import load_dataset
from vae.models.marginal import IS_CHUNK, log_marginal_is
from vae.runs.checkpoint import load_model, read_checkpoint
from vae.runs.folder import RunFolder, check_writable, writing
from vae.runs.progress import Meter

WHERE = "log-px writes log_px.json into the run's folder: make it writable, or copy the run to a writable one"


@torch.no_grad()
def evaluate_log_px(run_dir: Path, data_dir: Path | None, k: int, points: int, seed: int = 0) -> dict[str, Any]:
    """log p(x) (k importance samples) and the bound of the run's last checkpoint on the first ``points`` test
    images, in nats per image; written to ``log_px.json`` unless it already holds this very measurement."""
    folder = RunFolder(run_dir)
    checkpoint = read_checkpoint(folder)
    model = load_model(folder, checkpoint).eval()
    if model.encoder is None:
        raise ConfigError(
            f"{run_dir}: {model.cfg.algorithm} has no encoder to propose z; log p(x) of its runs is "
            "Figure 3's marginal-likelihood estimate"
        )
    samples = int(checkpoint["sample_axis"]["samples"])
    wanted = dict(samples=samples, k=k, points=points, seed=seed)
    known = folder.log_px()
    if known and all(known.get(key) == value for key, value in wanted.items()):
        return known
    check_writable(folder.path, WHERE)  # before the sampling, not after it
    x = load_dataset(model.cfg, data_dir)[1][:points]
    with Meter(
        f"log p(x) of {folder.sweep}/{folder.name}", "chunk", math.ceil(k / IS_CHUNK), model.cfg.heartbeat_seconds
    ) as tick:
        log_px = (
            log_marginal_is(x, model.decoder, model.encoder, torch.Generator().manual_seed(seed), k=k, between=tick)
            .mean()
            .item()
        )
    bound = model.elbo(x, "B", 1, torch.Generator().manual_seed(seed + 1)).mean().item()
    result = wanted | dict(points=len(x), log_px=log_px, elbo=bound, gap=log_px - bound)
    with writing(folder.path, WHERE):
        folder.write_log_px(result)
    return result
