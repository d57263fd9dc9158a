"""The SGVB estimators against independent computations: each other, and log p(x) by quadrature."""

import math

import torch

from vae.models.bounds import elbo
from vae.models.nets import BernoulliMLP, GaussianMLP, init_normal_


def tiny_model(nz: int, seed: int = 0, std: float = 0.5) -> tuple[GaussianMLP, BernoulliMLP]:
    enc, dec = GaussianMLP(6, 8, nz), BernoulliMLP(nz, 8, 6)
    g = torch.Generator().manual_seed(seed)
    init_normal_(enc, std, g)
    init_normal_(dec, std, g)
    return enc.double(), dec.double()


X = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1.0]], dtype=torch.float64)


def test_estimators_a_and_b_agree_in_expectation():
    enc, dec = tiny_model(nz=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a = elbo(X, enc, dec, "A", 200_000, g)
        b = elbo(X, enc, dec, "B", 200_000, g)
    torch.testing.assert_close(a, b, atol=0.02, rtol=0)


def test_estimator_b_has_lower_variance_than_a():
    enc, dec = tiny_model(nz=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        a = torch.stack([elbo(X, enc, dec, "A", 1, g) for _ in range(3000)])
        b = torch.stack([elbo(X, enc, dec, "B", 1, g) for _ in range(3000)])
    assert (b.var(0) < a.var(0)).all()


def test_more_samples_reduce_the_variance_as_one_over_L():
    enc, dec = tiny_model(nz=2)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        v1 = torch.stack([elbo(X, enc, dec, "B", 1, g) for _ in range(4000)]).var(0)
        v10 = torch.stack([elbo(X, enc, dec, "B", 10, g) for _ in range(4000)]).var(0)
    ratio = v1 / v10
    assert ((ratio > 7) & (ratio < 14)).all()


def test_bound_is_below_log_marginal_by_the_posterior_gap():
    """eq. (1): log p(x) = KL(q || p(z|x)) + L. With a 1-D latent, log p(x) and the exact bound follow from
    quadrature on a fine grid; the Monte Carlo bound must match the quadrature bound and lie below log p(x)."""
    enc, dec = tiny_model(nz=1, seed=3, std=1.0)
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)[:, None]
    dz = float(z[1] - z[0])
    with torch.no_grad():
        log_joint = dec.log_prob(X[None], z[:, None, :]) - 0.5 * (math.log(2 * math.pi) + z**2)
        log_px = torch.logsumexp(log_joint, 0) + math.log(dz)
        mean, logvar = enc(X)
        log_q = -0.5 * (math.log(2 * math.pi) + logvar.T + (z - mean.T) ** 2 / logvar.exp().T)
        exact_bound = (log_q.exp() * (log_joint - log_q)).sum(0) * dz
        mc = elbo(X, enc, dec, "B", 400_000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(mc, exact_bound, atol=0.01, rtol=0)
    assert (exact_bound < log_px - 1e-4).all()
