import math

import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae.models.densities import log_bernoulli, log_normal, log_std_normal, neg_kl_std_normal


def test_log_bernoulli_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 13, generator=g) * 4
    x = torch.bernoulli(torch.full((7, 13), 0.3), generator=g)
    expected = Independent(Bernoulli(logits=logits), 1).log_prob(x)
    torch.testing.assert_close(log_bernoulli(x, logits), expected)


def test_log_bernoulli_on_grey_levels_is_the_cross_entropy_of_eq_11():
    y = torch.tensor([[0.2, 0.9, 0.5]], dtype=torch.float64)
    x = torch.tensor([[0.0, 0.7, 0.25]], dtype=torch.float64)
    expected = (x * y.log() + (1 - x) * (1 - y).log()).sum(-1)
    torch.testing.assert_close(log_bernoulli(x, torch.logit(y)), expected)


def test_log_normal_and_prior_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    x, mean, logvar = torch.randn(3, 5, 4, generator=g).unbind(0)
    expected = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(x)
    torch.testing.assert_close(log_normal(x, mean, logvar), expected)
    std = Independent(Normal(torch.zeros(4), torch.ones(4)), 1).log_prob(x)
    torch.testing.assert_close(log_std_normal(x), std)


def test_analytic_kl_matches_torch_and_monte_carlo():
    mean = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.3, -2.0, 0.0]], dtype=torch.float64)
    q = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    torch.testing.assert_close(-neg_kl_std_normal(mean, logvar), kl_divergence(q, p))
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert abs(float(mc + neg_kl_std_normal(mean, logvar))) < 0.02


def test_analytic_kl_is_zero_only_at_the_prior():
    assert float(neg_kl_std_normal(torch.zeros(1, 4), torch.zeros(1, 4))) == 0.0
    assert float(neg_kl_std_normal(torch.full((1, 4), 0.1), torch.zeros(1, 4))) < 0.0
    assert math.isclose(
        float(neg_kl_std_normal(torch.zeros(1, 1), torch.tensor([[math.log(4.0)]]))),
        0.5 * (1 + math.log(4.0) - 4.0),
        rel_tol=1e-6,
    )
