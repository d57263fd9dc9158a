"""Hybrid Monte Carlo over the latent z [DKPR87], as used by MCEM (App. E) and the estimator of App. D.

Chains: z has shape (*chains, Nz): one chain per datapoint, (n, Nz), or S chains per datapoint, (S, n, Nz).
``log_joint`` maps z to log p(z) + log p(x|z) of shape ``chains`` (App. D, step 1); its gradient in z comes
from ``torch.autograd.grad``. Unit mass matrix. All randomness is drawn from the given generator, and the
step size stays a device tensor, so a step never syncs with the host.

Step size, following the author's ``hmc.hmc_step_autotune`` (anglepy): one scalar for the whole batch,
with a random sign per chain; after each step it is multiplied by a factor when the batch's mean acceptance
is at least the target (0.9, App. E) and divided by it otherwise. The factor is 1.02**(number of accept
decisions), capped at 1.25 as in the author's 2014 version of that function in anglepy's hmc.py (uncapped,
1000 chains would change the step size by 1.02**1000 ~ 4e8 per step). One scalar, because that rule aims at
a batch's mean acceptance; the author's per-chain variant (``hmc_step_autotune_indiv``, used by the 2014
``hmc_est.ll_estimator``) moves each chain's step size by exp(+-1.02) per decision, which balances at 50%
acceptance, not at the paper's 90%. ``tuning="chain"`` gives each chain its own step size, moved toward the
90% target by its own decisions (``tune_chain_step_sizes``, ours): App. D's estimator offers it, for datapoints
whose posterior is much narrower than the batch's typical one, where one shared step size leaves the chain stuck.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from vae.models.densities import log_std_normal
from vae.models.nets import Decoder

LogJoint = Callable[[torch.Tensor], torch.Tensor]
Tuning = Literal["batch", "chain"]


def posterior_log_joint(decoder: Decoder, x: torch.Tensor) -> LogJoint:
    """z -> log p(z) + log p(x|z), the unnormalized log posterior (App. D, App. E); x broadcasts over
    leading sample dimensions of z."""
    return lambda z: log_std_normal(z) + decoder.log_prob(x, z)


def value_and_grad(log_joint: LogJoint, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log_joint(z) and its gradient in z, both detached; parameters' .grad are left untouched."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_joint(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def leapfrog(
    log_joint: LogJoint, z: torch.Tensor, p: torch.Tensor, eps: torch.Tensor, n_steps: int, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n_steps leapfrog steps (n_steps position updates) of size eps, unit mass: a half momentum step, full
    steps, a final half momentum step. ``grad`` is the gradient at z. Returns (z, p, log_joint(z)) at the end.

    The author's ``hmc_step`` makes n_steps + 1 position updates for its argument n_steps; here n_steps is the
    paper's "number of leapfrog steps" taken literally."""
    p = p + 0.5 * eps * grad
    for i in range(n_steps):
        z = z + eps * p
        value, grad = value_and_grad(log_joint, z)
        p = p + (eps if i < n_steps - 1 else 0.5 * eps) * grad
    return z, p, value


def tune_step_size(
    step_size: torch.Tensor, accept: torch.Tensor, target: float = 0.9, alpha: float = 1.02, max_factor: float = 1.25
) -> torch.Tensor:
    """The author's autotuning (anglepy's ``hmc_step_autotune``): multiply by min(max_factor, alpha**n) when the
    mean of the n accept decisions is at least ``target``, divide otherwise."""
    factor = math.exp(min(accept.numel() * math.log(alpha), math.log(max_factor)))
    rate = accept.to(step_size.dtype).mean()
    return torch.where(rate < target, step_size / factor, step_size * factor)


def tune_chain_step_sizes(
    step_size: torch.Tensor, accept: torch.Tensor, target: float = 0.9, max_factor: float = 1.25
) -> torch.Tensor:
    """Each chain's own step size (shape ``accept.shape``), moved by its own decision: divided by
    ``max_factor`` on a rejection, multiplied by max_factor**((1 - target)/target) on an acceptance, so that
    it settles where the chain accepts a ``target`` fraction of its transitions."""
    rate = math.log(max_factor) / target
    return step_size * torch.exp(rate * (accept.to(step_size.dtype) - target))


@dataclass
class HMCStep:
    """One HMC transition: the new chain state, which chains accepted, log_joint at the new state, and the
    step size for the next transition (tuned, or unchanged when tuning is off)."""

    z: torch.Tensor
    accept: torch.Tensor
    log_joint: torch.Tensor
    step_size: torch.Tensor

    @property
    def accept_rate(self) -> torch.Tensor:
        return self.accept.to(self.z.dtype).mean()


def hmc_step(
    log_joint: LogJoint,
    z: torch.Tensor,
    step_size: float | torch.Tensor,
    generator: torch.Generator,
    n_steps: int = 10,
    target: float | None = 0.9,
    alpha: float = 1.02,
    max_factor: float = 1.25,
    tuning: Tuning = "batch",
) -> HMCStep:
    """One HMC transition of every chain: fresh momentum p ~ N(0, I), ``n_steps`` leapfrog steps with step
    size +-``step_size`` (sign drawn per chain), a Metropolis test per chain on H = -log_joint + |p|^2 / 2.

    Defaults are MCEM's (App. E: 10 leapfrog steps, tuned to 90% acceptance); ``target=None`` keeps the step
    size fixed. ``tuning``: ``batch``, one scalar step size tuned on the batch's mean acceptance
    (``tune_step_size``), or ``chain``, a step size per chain (``step_size`` of the chains' shape, or a scalar
    that every chain starts from; ``tune_chain_step_sizes``)."""
    step_size = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    chains = z.shape[:-1]
    if tuning == "chain":
        step_size = step_size.expand(chains)
    sign = torch.randint(0, 2, chains, generator=generator, device=z.device).to(z.dtype) * 2 - 1
    p0 = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    log_u = torch.rand(chains, generator=generator, device=z.device, dtype=z.dtype).log()
    value0, grad0 = value_and_grad(log_joint, z)
    z1, p1, value1 = leapfrog(log_joint, z, p0, (step_size * sign)[..., None], n_steps, grad0)
    h0 = -value0 + 0.5 * p0.pow(2).sum(-1)
    h1 = -value1 + 0.5 * p1.pow(2).sum(-1)
    accept = log_u < h0 - h1
    new_z = torch.where(accept[..., None], z1, z.detach())
    new_value = torch.where(accept, value1, value0)
    if target is not None and tuning == "chain":
        step_size = tune_chain_step_sizes(step_size, accept, target, max_factor)
    elif target is not None:
        step_size = tune_step_size(step_size, accept, target, alpha, max_factor)
    return HMCStep(new_z, accept, new_value, step_size)
