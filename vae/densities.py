"""Log-densities and the analytic KL used by the bounds (§3, App. B, App. C).

Reduction convention, stated once: every function returns one value per datapoint, summed over pixels and
latent dimensions, in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """eq. (11): sum_i x_i log y_i + (1 - x_i) log(1 - y_i) with y = sigmoid(logits), computed stably.

    x may hold grey levels in [0, 1], as in the authors' MNIST runs.
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def log_normal(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dimension (eq. 9, eq. 12)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I): the prior p(z) of §3."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def neg_kl_std_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-D_KL(N(mean, exp(logvar)) || N(0, I)) in closed form (App. B; first term of eq. 10)."""
    return 0.5 * (1.0 + logvar - mean.pow(2) - torch.exp(logvar)).sum(-1)
