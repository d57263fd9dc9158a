"""AEVB (Algorithm 1): the SGVB estimator A or B of eq. (8) plus the MAP prior, ascended jointly in the
encoder and decoder parameters with Adagrad, for a stack of k models."""

from __future__ import annotations

import torch

from vae.algorithms.stack import Stack, share


class AEVB(Stack):
    """Gaussian encoder (App. C.2), Bernoulli or two-head Gaussian decoder (App. C.1 / C.2)."""

    def step(self) -> None:
        """One iteration of Algorithm 1 for every model: minibatch, noise, gradient of eq. (8) plus the prior,
        Adagrad. The loss is the sum of the k models' losses, so model j's gradient is its own. The minibatch
        bound (eq. 8 before the update, without the prior) joins the running average."""
        cfg = self.cfg
        (opt,) = self.optimizers
        params = [p for group in opt.param_groups for p in group["params"]]
        x = self.minibatch()
        eps = self.normal(cfg.L, cfg.M)[:, :, share(cfg.M)]
        loss, sums = self.region(self.objective)(x, eps)
        self.accumulate(sums)
        for p in params:
            p.grad = None
        loss.backward()
        self.reduce_gradients(params)
        opt.step()

    def objective(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss, minus eq. (8)'s estimate divided by M (the sum over the k models), and each model's sum of
        minibatch bounds for the running average (None where none is logged)."""
        bound = self.bound(x, eps)
        return bound.sum() / -self.cfg.M, self.bound_sums(bound)  # / -M: = -sum / M exactly, one kernel fewer
