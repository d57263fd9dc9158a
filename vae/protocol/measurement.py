"""One evaluation point of a stack: the bound on the full training and test sets (Figure 2) and, with
``evaluation: marginal``, the estimated log p(x) on the first ``marginal_points`` of each (Figure 3, App. D)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import torch

from vae.algorithms.evaluation import eval_generators, evaluate
from vae.algorithms.stack import Stack
from vae.config import Config
from vae.models.hmc import Tuning
from vae.models.marginal import Bandwidth, hmc_calls, log_marginal_hmc, log_marginal_is
from vae.models.nets import Decoder, GaussianMLP
from vae.models.vae import uses_encoder


class AppDSettings(TypedDict):
    n_samples: int
    n_burnin: int
    n_steps: int
    step_size: float
    target: float
    bandwidth: Bandwidth
    tuning: Tuning


def measure(stack: Stack, between: Callable[[], None] = lambda: None) -> list[dict[str, float]]:
    """A row per model of ``stack`` (``train/elbo``, ``test/elbo`` and, with ``evaluation: marginal``,
    ``train/marginal``, ``test/marginal``). ``between`` runs after each transition of the HMC chains."""
    cfg = stack.cfg
    rows: list[dict[str, float]] = [{} for _ in range(stack.k)]
    generators = eval_generators(stack)  # one stream per model: train bound, test bound, then log p(x)
    if stack.encoder is not None:
        for split, x in (("train", stack.train_x), ("test", stack.test_x)):
            for row, value in zip(rows, evaluate(stack, x, generators), strict=True):
                row[f"{split}/elbo"] = value
    if cfg.evaluation == "marginal":
        for j, row in enumerate(rows):
            model = stack.model(j)
            for split, x in (("train", stack.train_x), ("test", stack.test_x)):
                row[f"{split}/marginal"] = mean_log_marginal(
                    cfg, model.decoder, model.encoder, x[: cfg.marginal_points], generators[j], between
                )
    return rows


def between_calls(stack: Stack) -> int:
    """How often ``measure`` calls ``between``: after each HMC step of App. D's estimator, for every model and
    both sets (none with the bound alone or importance sampling, which take seconds)."""
    cfg = stack.cfg
    if cfg.evaluation != "marginal" or cfg.marginal_estimator != "hmc":
        return 0
    return 2 * stack.k * hmc_calls(cfg.marginal_samples, cfg.marginal_burnin, prior_start=not uses_encoder(cfg))


def mean_log_marginal(
    cfg: Config,
    decoder: Decoder,
    encoder: GaussianMLP | None,
    x: torch.Tensor,
    generator: torch.Generator,
    between: Callable[[], None] = lambda: None,
) -> float:
    """Average estimated log p(x) over ``x``: App. D's HMC estimator, or importance sampling with the encoder as
    proposal (``marginal_estimator``). Every DDP rank computes it in full: it is cheap next to training."""
    if cfg.binarize == "dynamic":
        x = torch.bernoulli(x, generator=generator)
    if cfg.marginal_estimator == "is":
        values = log_marginal_is(x, decoder, encoder, generator, k=cfg.marginal_is_k)
    else:
        values = log_marginal_hmc(x, decoder, encoder, generator, **app_d_settings(cfg), between=between)
    return float(values.double().mean())


def app_d_settings(cfg: Config) -> AppDSettings:
    """The keyword arguments of ``log_marginal_hmc`` that a run's config sets (App. D, App. E)."""
    return AppDSettings(
        n_samples=cfg.marginal_samples,
        n_burnin=cfg.marginal_burnin,
        n_steps=cfg.marginal_leapfrog,
        step_size=cfg.hmc_step_size,
        target=cfg.hmc_target,
        bandwidth=cfg.marginal_bandwidth,
        tuning=cfg.marginal_step_tuning,
    )
