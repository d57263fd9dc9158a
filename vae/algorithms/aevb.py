"""AEVB (Algorithm 1): the SGVB estimator A or B of eq. (8) plus the MAP prior, ascended jointly in the
encoder and decoder parameters with Adagrad, for a stack of k models."""

from __future__ import annotations

import torch

from vae.algorithms.optim import adagrad_step
from vae.algorithms.parallel import share
from vae.algorithms.stack import Stack


class AEVB(Stack):
    """Gaussian encoder (App. C.2), Bernoulli or two-head Gaussian decoder (App. C.1 / C.2)."""

    def step(self) -> None:
        """One iteration of Algorithm 1 for every model: a minibatch of M datapoints, noise eps ~ p(eps), the
        gradient of eq. (8) plus the prior, an Adagrad step. The loss is the sum of the k models' losses, so model
        j's gradient is its own. The minibatch bound (eq. 8 before the update, without the prior) joins the
        running average."""
        cfg = self.cfg
        x = self.draws.minibatch(self.train_x)
        eps = self.draws.normal(cfg.L, cfg.M)[:, :, share(cfg.M)]
        loss, sums = self.region(self.objective)(x, eps)
        self.running.accumulate(sums)
        adagrad_step(self.optimizers[0], loss)

    def objective(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss, minus eq. (8)'s estimate divided by M (the sum over the k models), and each model's sum of
        minibatch bounds for the running average (None where none is logged)."""
        bound = self.bound(x, eps)
        return bound.sum() / -self.cfg.M, self.running.bound_sums(bound)  # / -M: = -sum / M exactly, one kernel fewer
