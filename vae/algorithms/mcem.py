"""Monte Carlo EM with Hybrid Monte Carlo, the Figure 3 baseline (App. E), as a stack of one model.

No encoder: the posterior p(z|x) is sampled with HMC using the gradient of log p(z) + log p(x|z). Following
the authors' ``wzoptim.step_batch_mcem``, every training datapoint keeps a persistent chain; an iteration is
one HMC transition of every chain (``mcem_leapfrog`` leapfrog steps, one step size for all chains tuned toward
``hmc_target`` acceptance) followed by ``mcem_msteps`` Adagrad steps on the decoder along the full-batch
gradient of (1/N) sum_i log p(x_i|z_i) plus the MAP prior. MCEM is not an on-line algorithm (Fig. 3 caption),
so it works on the whole training set. An iteration counts ``(mcem_leapfrog + mcem_msteps) * N`` training
samples evaluated, every full-batch gradient pass (``mcem_counting: passes``, as Figure 3 counts: its first
N_train = 50000 point lies at 15 * 50000), or ``mcem_msteps * N``, the weight updates alone (``msteps``).

One model per stack: each iteration is already one full-batch pass over N chains, large enough to fill a
device, and the step-size tuning is defined on the whole batch of chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vae.algorithms.optim import adagrad_step
from vae.algorithms.stack import Stack
from vae.config import Config
from vae.models.densities import log_std_normal
from vae.models.hmc import hmc_step, posterior_log_joint


class MCEM(Stack):
    stackable = False
    graphable = False
    minibatch_bound = False

    def __init__(self, configs: Sequence[Config]) -> None:
        super().__init__(configs)
        self.chains: torch.Tensor | None = None  # (1, N, Nz): one persistent chain per training datapoint
        self.step_size: torch.Tensor | None = None

    @classmethod
    def step_samples(cls, cfg: Config) -> int:
        passes = cfg.mcem_msteps + (cfg.mcem_leapfrog if cfg.mcem_counting == "passes" else 0)
        assert cfg.n_train is not None  # a Config holds its dataset's default in place of null
        return passes * cfg.n_train

    def optimized_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def attach(self, train_x: torch.Tensor, test_x: torch.Tensor) -> None:
        super().attach(train_x, test_x)
        if self.chains is None:  # a fresh run: chains start from the prior
            self.chains = self.draws.normal(len(train_x))
            self.step_size = torch.tensor(self.cfg.hmc_step_size, device=self.device)
        assert self.chains is not None and self.step_size is not None  # a checkpoint's or the fresh ones
        self.chains, self.step_size = self.chains.to(self.device), self.step_size.to(self.device)

    def algorithm_state(self, j: int) -> dict[str, Any]:
        return {} if self.chains is None else {"z": self.chains[0], "step_size": self.step_size}

    def load_algorithm_state(self, j: int, state: dict[str, Any]) -> None:
        if state:
            self.chains, self.step_size = state["z"].unsqueeze(0), state["step_size"]

    def data(self) -> torch.Tensor:
        x = self.train_x.unsqueeze(0)
        return self.draws.bernoulli(x) if self.cfg.binarize == "dynamic" else x

    def selection_score(self, generators: Sequence[torch.Generator]) -> list[float]:
        """The MCEM objective at the current chains: the average of log p(x_i, z_i) over the training set."""
        assert self.chains is not None  # set by attach
        with torch.no_grad():
            x = self.train_x.unsqueeze(0)
            return [float((log_std_normal(self.chains) + self.decoder.log_prob(x, self.chains)).mean())]

    def step(self) -> None:
        """E-step (one HMC transition per chain, App. E), then the M-steps: Adagrad steps on the decoder along the
        full-batch gradient of (1/N) sum_i log p(x_i|z_i) plus the prior."""
        cfg = self.cfg
        x = self.data()
        (generator,) = self.draws.generators()
        assert self.chains is not None and self.step_size is not None  # set by attach
        step = hmc_step(
            posterior_log_joint(self.decoder, x),
            self.chains,
            self.step_size,
            generator,
            n_steps=cfg.mcem_leapfrog,
            target=cfg.hmc_target,
        )
        self.chains, self.step_size = step.z, step.step_size
        for _ in range(cfg.mcem_msteps):
            adagrad_step(self.optimizers[0], -self.decoder.log_prob(x, self.chains).mean())
