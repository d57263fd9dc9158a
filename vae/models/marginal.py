"""Estimates of the marginal likelihood log p(x), one value per datapoint, in nats.

``log_marginal_hmc``: the estimator of App. D (Figure 3): HMC samples of p(z|x), a density q(z) fitted to the
first half, and 1/p(x) ~ mean q(z)/p(x, z) over the second half, in log space.
``log_marginal_is``: importance sampling with the encoder as proposal, log (1/k) sum_j p(x, z_j)/q(z_j|x),
the k-sample bound of Burda et al. (2016; k = 5000); a lower bound in expectation that rises with k.

What App. D/E leave open, and the choices here: the burn-in (``n_burnin``, ours), the initial step size
(``step_size``, ours), the chains' start (z ~ q(z|x) as in the author's ``ll_estimator``), the density q(z)
(a Gaussian KDE, or a moment-fitted diagonal Gaussian when Nz = 1 or n_fit/Nz < 4, as in the author's
``estimate_mcmc_likelihood``) and its bandwidth (``bandwidth``: Scott's rule, or the author's default
``kde2``, a multiple of Scott's factor chosen per datapoint on a split of the fitting samples), and the
step-size tuning, which like the author's code continues while samples are taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from vae.models.densities import LOG_2PI, log_normal, log_std_normal
from vae.models.hmc import Tuning, hmc_step, posterior_log_joint
from vae.models.nets import Decoder, GaussianMLP


def scott_factor(n: int, d: int) -> float:
    """Scott's rule n**(-1/(d+4)), the bandwidth factor of ``scipy.stats.gaussian_kde`` by default."""
    return n ** (-1.0 / (d + 4))


def kde_log_density(fit: torch.Tensor, points: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """``scipy.stats.gaussian_kde(fit, bw_method=factor).logpdf(points)``, batched over leading dimensions.

    fit (..., m, d), points (..., k, d), factor a float or of shape (...); returns (..., k). The kernel
    covariance is factor^2 times the unbiased covariance of ``fit``; where that is singular (fewer than d + 1
    distinct points, or a failed Cholesky factorisation) the result is NaN. Counting the points makes that
    exact: rounding can let a rank-deficient covariance factorise with a near-zero pivot, and log q then reads
    thousands (float32) to 1e12 (float64) nats too low.
    """
    m, d = fit.shape[-2:]
    centered = fit - fit.mean(-2, keepdim=True)
    factor = torch.as_tensor(factor, dtype=fit.dtype, device=fit.device)
    cov = centered.mT @ centered / (m - 1) * factor[..., None, None] ** 2
    chol, info = torch.linalg.cholesky_ex(cov)
    white_fit = torch.linalg.solve_triangular(chol, fit.mT, upper=False).mT
    white_points = torch.linalg.solve_triangular(chol, points.mT, upper=False).mT
    sq_dist = (white_points[..., :, None, :] - white_fit[..., None, :, :]).pow(2).sum(-1)
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_q = torch.logsumexp(-0.5 * sq_dist, -1) - math.log(m) - 0.5 * (d * LOG_2PI + log_det[..., None])
    singular = (info > 0) | (distinct_points(fit) <= d)
    return log_q.masked_fill(singular[..., None], math.nan)


def distinct_points(fit: torch.Tensor) -> torch.Tensor:
    """The number of distinct rows of fit (..., m, d); returns (...). An HMC chain repeats its position on
    every rejected transition."""
    m = fit.shape[-2]
    same = (fit[..., :, None, :] == fit[..., None, :, :]).all(-1)
    earlier = torch.ones(m, m, dtype=torch.bool, device=fit.device).tril(-1)
    return (~(same & earlier).any(-1)).sum(-1)


Bandwidth = Literal["scott", "validated"]

# the author's kde_infer_factor: Scott's factor times exp((i - 5) / 2), i = 0..9
FACTOR_STEPS = torch.arange(10, dtype=torch.float64).sub(5).div(2).exp()


def validated_factor(fit: torch.Tensor) -> torch.Tensor:
    """The author's ``kde_infer_factor`` batched over leading dimensions: for fit (..., m, d), the one of ten
    multiples of Scott's factor n**(-1/(d+4)) (n = m) under which a KDE fitted to fit[m//2:] gives fit[:m//2]
    the highest total log density; returns (...). The first best on ties; Scott's factor where no candidate
    gives a finite score (a singular half)."""
    m, d = fit.shape[-2:]
    half = m // 2
    candidates = scott_factor(m, d) * FACTOR_STEPS.to(fit.device, fit.dtype)
    held_in, held_out = fit[..., half:, :], fit[..., :half, :]
    scores = torch.stack([kde_log_density(held_in, held_out, c).sum(-1) for c in candidates.tolist()], -1)
    scores = scores.nan_to_num(nan=-math.inf)
    best = candidates[scores.argmax(-1)]
    return torch.where(scores.isfinite().any(-1), best, scott_factor(m, d))


def diag_gaussian_log_density(fit: torch.Tensor, points: torch.Tensor, min_std: float = 0.0) -> torch.Tensor:
    """log N(points; mean, diag(std^2)) with the moments (std with ddof 0, at least ``min_std``) of fit
    (..., m, d); points (..., k, d); returns (..., k). NaN where some coordinate's std is zero."""
    mean, std = fit.mean(-2, keepdim=True), fit.std(-2, correction=0, keepdim=True).clamp(min=min_std)
    log_q = log_normal(points, mean, 2 * std.log())
    return log_q.masked_fill((std == 0).any(-1), math.nan)


def fitted_log_density(fit: torch.Tensor, points: torch.Tensor, bandwidth: Bandwidth = "scott") -> torch.Tensor:
    """q(z) of App. D, step 2, fitted to ``fit`` (..., m, d) and evaluated at ``points`` (..., k, d).

    As in the author's code: a moment-fitted diagonal Gaussian when d = 1 or m/d < 4, else a Gaussian KDE
    with Scott's factor (``scott``, the author's ``kde``) or a validated one (``validated``, ``kde2``)."""
    m, d = fit.shape[-2:]
    if d == 1 or m / d < 4:
        return diag_gaussian_log_density(fit, points)
    factor = validated_factor(fit) if bandwidth == "validated" else scott_factor(m, d)
    return kde_log_density(fit, points, factor)


def log_marginal_from_samples(z: torch.Tensor, log_joint: torch.Tensor, bandwidth: Bandwidth = "scott") -> torch.Tensor:
    """App. D, steps 2-3, from S posterior samples z (S, n, Nz) with log p(x, z) (S, n): q is fitted to the
    first S//2 samples (``fitted_log_density``), and log p(x) = -log mean_l q(z_l)/p(x, z_l) over the rest
    (logsumexp). Returns (n,)."""
    S = z.shape[0]
    if S < 4:
        raise ValueError(f"need at least 4 samples per datapoint, got {S}")
    n_fit = S // 2
    fit, points = z[:n_fit].transpose(0, 1), z[n_fit:].transpose(0, 1)
    log_q = fitted_log_density(fit, points, bandwidth)
    stuck = log_q.isnan().any(-1)
    if stuck.any():
        # a chain that (nearly) did not move while fitting gives the KDE no full-rank spread; as the author's
        # code does for a chain without spread, such a datapoint gets a diagonal Gaussian, no narrower than the
        # smallest spread seen in the batch
        spread = fit.std(-2, correction=0)
        floor = float(spread[spread > 0].min()) if bool((spread > 0).any()) else 1e-3
        log_q[stuck] = diag_gaussian_log_density(fit[stuck], points[stuck], floor)
    log_ratio = log_q - log_joint[n_fit:].T
    return math.log(S - n_fit) - torch.logsumexp(log_ratio, -1)


class PosteriorSamples(NamedTuple):
    """HMC output: z (S, n, Nz), log p(x, z) (S, n), mean acceptance while sampling, final step size."""

    z: torch.Tensor
    log_joint: torch.Tensor
    accept_rate: torch.Tensor
    step_size: torch.Tensor


def hmc_posterior_samples(
    x: torch.Tensor,
    decoder: Decoder,
    z0: torch.Tensor,
    generator: torch.Generator,
    n_samples: int = 50,
    n_burnin: int = 100,
    n_steps: int = 4,
    step_size: float = 0.01,
    target: float = 0.9,
    tuning: Tuning = "batch",
    between: Callable[[], None] = lambda: None,
) -> PosteriorSamples:
    """App. D, step 1: one HMC chain per datapoint from z0 (n, Nz); ``n_burnin`` transitions, then one sample
    after each of ``n_samples`` transitions, each of ``n_steps`` leapfrog steps, the step size tuned
    throughout toward ``target`` acceptance (App. E: 50 samples, 4 leapfrog steps, 90%), one for the batch or
    one per chain (``tuning``). ``between`` is called after each transition (a caller's point to stop at)."""
    log_joint = posterior_log_joint(decoder, x)
    z, eps = z0, torch.as_tensor(step_size, dtype=z0.dtype, device=z0.device)
    zs, values, accepts = [], [], []
    for t in range(n_burnin + n_samples):
        step = hmc_step(log_joint, z, eps, generator, n_steps, target, tuning=tuning)
        z, eps = step.z, step.step_size
        if t >= n_burnin:
            zs.append(z)
            values.append(step.log_joint)
            accepts.append(step.accept)
        between()
    accept_rate = torch.stack(accepts).to(z.dtype).mean()
    return PosteriorSamples(torch.stack(zs), torch.stack(values), accept_rate, eps)


# the prior draws that start a chain without an encoder, drawn START_CHUNK at a time; importance samples at a time
K_START, START_CHUNK, IS_CHUNK = 1000, 100, 100


def hmc_calls(n_samples: int, n_burnin: int, prior_start: bool) -> int:
    """How often ``log_marginal_hmc`` calls ``between``: after each transition, and after each chunk of the prior
    draws that start the chains without an encoder (``prior_start``)."""
    return n_burnin + n_samples + (math.ceil(K_START / START_CHUNK) if prior_start else 0)


def latent_dim(decoder: Decoder) -> int:
    """Nz, the decoder's input size."""
    return decoder.hidden.in_features


@torch.no_grad()
def best_prior_draw(
    x: torch.Tensor,
    decoder: Decoder,
    generator: torch.Generator,
    k: int = K_START,
    chunk: int = START_CHUNK,
    between: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """A chain start without an encoder: of k draws z ~ p(z) per datapoint, the one with the highest
    log p(x, z). HMC started from a plain prior draw, with one step size for all chains, does not reach the
    posterior of a trained model within any affordable burn-in (tested on the Figure 3 models)."""
    nz = latent_dim(decoder)
    best_z = torch.zeros(x.shape[0], nz, device=x.device, dtype=x.dtype)
    best = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    for start in range(0, k, chunk):
        z = torch.randn((min(chunk, k - start), x.shape[0], nz), generator=generator, device=x.device, dtype=x.dtype)
        value, i = posterior_log_joint(decoder, x)(z).max(0)
        better = value > best
        best = torch.where(better, value, best)
        best_z = torch.where(better[:, None], z[i, torch.arange(x.shape[0], device=x.device)], best_z)
        between()
    return best_z


def log_marginal_hmc(
    x: torch.Tensor,
    decoder: Decoder,
    encoder: GaussianMLP | None,
    generator: torch.Generator,
    z0: torch.Tensor | None = None,
    n_samples: int = 50,
    n_burnin: int = 100,
    n_steps: int = 4,
    step_size: float = 0.01,
    target: float = 0.9,
    k_start: int = K_START,
    bandwidth: Bandwidth = "scott",
    tuning: Tuning = "batch",
    between: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """The App. D estimate of log p(x) for each row of x (n, D); returns (n,).

    Chains start at ``z0`` if given, else at z ~ q(z|x) from ``encoder``, else at the best of ``k_start``
    prior draws (``best_prior_draw``; MCEM has no encoder). Cost: (n_burnin + n_samples) * (n_steps + 1)
    decoder passes with gradient. ``between`` is called between the chains' transitions."""
    if z0 is None:
        if encoder is None:
            z0 = best_prior_draw(x, decoder, generator, k_start, between=between)
        else:
            with torch.no_grad():
                mean, logvar = encoder(x)
            z0 = mean + torch.exp(0.5 * logvar) * torch.randn(
                mean.shape, generator=generator, device=x.device, dtype=x.dtype
            )
    samples = hmc_posterior_samples(
        x, decoder, z0, generator, n_samples, n_burnin, n_steps, step_size, target, tuning, between
    )
    return log_marginal_from_samples(samples.z, samples.log_joint, bandwidth)


@torch.no_grad()
def log_marginal_is(
    x: torch.Tensor,
    decoder: Decoder,
    encoder: GaussianMLP | None,
    generator: torch.Generator,
    k: int = 5000,
    chunk: int = IS_CHUNK,
    between: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """log (1/k) sum_j p(x, z_j)/q(z_j|x), z_j ~ q(z|x), for each row of x (n, D); returns (n,).

    The proposal is the encoder, or the prior p(z) when ``encoder`` is None. Samples are drawn ``chunk`` at a
    time and combined by a running logsumexp, so memory grows with chunk * n * D, not with k; ``between`` is
    called after each chunk."""
    nz = latent_dim(decoder)
    if encoder is None:
        mean = logvar = torch.zeros(x.shape[0], nz, device=x.device, dtype=x.dtype)
    else:
        mean, logvar = encoder(x)
    total = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    for start in range(0, k, chunk):
        eps = torch.randn((min(chunk, k - start), *mean.shape), generator=generator, device=x.device, dtype=x.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        log_w = log_std_normal(z) + decoder.log_prob(x, z) - log_normal(z, mean, logvar)
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        between()
    return total - math.log(k)
