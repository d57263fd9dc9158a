"""HMC (vae.models.hmc) on a 2-D correlated Gaussian, whose moments are known in closed form."""

import pytest
import torch

from vae.models.hmc import hmc_step, leapfrog, tune_chain_step_sizes, tune_step_size, value_and_grad

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 1.6], [1.6, 4.0]], dtype=torch.float64)  # correlation 0.8, eigenvalues 0.31, 4.69
PREC = torch.linalg.inv(COV)


def log_target(z: torch.Tensor) -> torch.Tensor:
    d = z - MEAN
    return -0.5 * (PREC[0, 0] * d[..., 0] ** 2 + 2 * PREC[0, 1] * d[..., 0] * d[..., 1] + PREC[1, 1] * d[..., 1] ** 2)


def test_chains_converge_to_and_keep_the_target_moments():
    """4000 chains start at one point far from the mode; after 40 transitions, the pooled states of the next 60
    must have the target's mean and covariance. The step size 0.8 is close to the leapfrog stability limit
    2 * sqrt(0.31) = 1.11, so about a quarter of the proposals are rejected: without the Metropolis test the
    chains would settle on the leapfrog's shadow distribution, whose variance along the narrow axis is about
    twice the target's. Tolerances: about 2.5 times the largest error over 10 seeds (0.008 for the mean,
    0.028 for the covariance)."""
    g = torch.Generator().manual_seed(0)
    z = torch.full((4000, 2), 4.0, dtype=torch.float64)
    pooled, rates = [], []
    for t in range(100):
        step = hmc_step(log_target, z, 0.8, g, n_steps=5, target=None)
        z = step.z
        if t >= 40:
            pooled.append(z)
            rates.append(step.accept_rate)
    samples = torch.cat(pooled)
    assert 0.6 < torch.stack(rates).mean() < 0.9
    torch.testing.assert_close(samples.mean(0), MEAN, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), COV, atol=0.06, rtol=0)


def test_leapfrog_is_reversible_with_second_order_energy_error():
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(50, 2, generator=g, dtype=torch.float64)
    p0 = torch.randn(50, 2, generator=g, dtype=torch.float64)
    v0, g0 = value_and_grad(log_target, z0)
    errors = []
    for eps, n_steps in ((0.1, 10), (0.05, 20)):  # the same trajectory length
        z1, p1, v1 = leapfrog(log_target, z0, p0, torch.tensor(eps, dtype=torch.float64), n_steps, g0)
        errors.append(((-v1 + 0.5 * p1.pow(2).sum(-1)) - (-v0 + 0.5 * p0.pow(2).sum(-1))).abs().mean())
    _, g1 = value_and_grad(log_target, z1)
    z2, p2, v2 = leapfrog(log_target, z1, -p1, torch.tensor(0.05, dtype=torch.float64), 20, g1)
    torch.testing.assert_close(z2, z0)
    torch.testing.assert_close(-p2, p0)
    torch.testing.assert_close(v2, v0)
    assert 3.5 < errors[0] / errors[1] < 4.5  # halving the step quarters the energy error


def test_autotuning_reaches_the_target_acceptance():
    """From a step size 1000 times too small, the author's rule brings the acceptance rate to 0.9 (App. E)."""
    g = torch.Generator().manual_seed(2)
    z = MEAN + torch.randn(1000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T
    eps, rates = torch.tensor(1e-3, dtype=torch.float64), []
    for _ in range(120):
        step = hmc_step(log_target, z, eps, g, n_steps=10, target=0.9)
        z, eps = step.z, step.step_size
        rates.append(step.accept_rate)
    assert abs(torch.stack(rates[60:]).mean() - 0.9) < 0.05
    assert 0.1 < eps < 1.11


def test_tuning_rule_multiplies_or_divides_by_1_02_per_decision_capped():
    eps = torch.tensor(0.1, dtype=torch.float64)
    five_of_six = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)
    torch.testing.assert_close(tune_step_size(eps, five_of_six), eps / 1.02**6)
    torch.testing.assert_close(tune_step_size(eps, torch.ones(3, dtype=torch.bool)), eps * 1.02**3)
    torch.testing.assert_close(tune_step_size(eps, torch.ones(1000, dtype=torch.bool)), eps * 1.25)
    torch.testing.assert_close(tune_step_size(eps, torch.zeros(50_000, dtype=torch.bool)), eps / 1.25)


def test_chain_tuning_divides_by_1_25_on_a_rejection_and_balances_at_the_target():
    eps = torch.tensor([0.1, 0.1], dtype=torch.float64)
    out = tune_chain_step_sizes(eps, torch.tensor([False, True]))
    torch.testing.assert_close(out, torch.tensor([0.1 / 1.25, 0.1 * 1.25 ** (1 / 9)], dtype=torch.float64))
    nine_of_ten = torch.tensor([True] * 9 + [False])
    for accept in nine_of_ten[torch.randperm(10)]:
        eps = tune_chain_step_sizes(eps, accept.expand(2))
    torch.testing.assert_close(eps, torch.tensor([0.1, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("tuning", ["batch", "chain"])
def test_a_narrow_posterior_among_wide_ones_is_stuck_under_one_step_size_and_moves_under_its_own(tuning):
    """990 chains of sd 1 and 10 of sd 0.01: one step size tuned on the batch's acceptance suits the wide ones and
    the narrow chains almost never move; a step size per chain brings each to about 90% acceptance."""
    g = torch.Generator().manual_seed(3)
    scale = torch.ones(1000, 1, dtype=torch.float64)
    scale[:10] = 0.01

    def target(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z / scale).pow(2).sum(-1)

    z, eps, accepted = torch.randn(1000, 2, generator=g, dtype=torch.float64) * scale, 0.01, []
    for t in range(300):
        step = hmc_step(target, z, eps, g, n_steps=4, target=0.9, tuning=tuning)
        z, eps = step.z, step.step_size
        if t >= 100:
            accepted.append(step.accept)
    rate = torch.stack(accepted).double().mean(0)
    if tuning == "batch":
        assert rate[10:].mean() > 0.85 and rate[:10].max() < 0.05
    else:
        assert (rate - 0.9).abs().max() < 0.1 and eps.shape == (1000,)


def test_steps_are_reproducible_and_accept_sample_dimensions():
    z = torch.zeros(3, 4, 2, dtype=torch.float64)  # (S, n, Nz)
    a = hmc_step(log_target, z, 0.3, torch.Generator().manual_seed(5), n_steps=4)
    b = hmc_step(log_target, z, 0.3, torch.Generator().manual_seed(5), n_steps=4)
    c = hmc_step(log_target, z, 0.3, torch.Generator().manual_seed(6), n_steps=4)
    assert a.z.shape == (3, 4, 2) and a.accept.shape == a.log_joint.shape == (3, 4)
    torch.testing.assert_close(a.z, b.z)
    torch.testing.assert_close(a.step_size, b.step_size)
    assert not torch.equal(a.z, c.z)
    torch.testing.assert_close(a.log_joint, log_target(a.z))
