"""The SGVB estimators of the variational lower bound (§2.3, eq. 6-7 and eq. 10).

One value per datapoint, in nats; averages over a minibatch are taken by the caller.
"""

from __future__ import annotations

import torch

from vae.models.densities import log_normal, log_std_normal, neg_kl_std_normal
from vae.models.nets import Decoder, GaussianMLP


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps (eq. 4, §3); eps has a leading sample dimension L."""
    return mean + torch.exp(0.5 * logvar) * eps


def elbo(
    x: torch.Tensor,
    encoder: GaussianMLP,
    decoder: Decoder,
    estimator: str,
    L: int,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The SGVB lower bound per datapoint with L samples of z: estimator "A" (eq. 6) or "B" (eq. 7/10).

    The noise eps ~ N(0, I) of shape (L, len(x), Nz) is drawn from ``generator`` unless given."""
    mean, logvar = encoder(x)
    if eps is None:
        eps = torch.randn((L, *mean.shape), device=mean.device, dtype=mean.dtype, generator=generator)
    z = reparameterize(mean, logvar, eps)
    log_px = sample_mean(decoder.log_prob(x, z))
    if estimator == "B":
        return neg_kl_std_normal(mean, logvar) + log_px
    if estimator == "A":
        return sample_mean(log_std_normal(z) - log_normal(z, mean, logvar)) + log_px
    raise ValueError(f"estimator must be 'A' or 'B', got {estimator!r}")


def sample_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over the leading sample dimension; with one sample, the values themselves (a view: the same
    numbers as ``mean(0)``, which divides by 1, without its two kernels and autograd nodes)."""
    return values.squeeze(0) if values.shape[0] == 1 else values.mean(0)
