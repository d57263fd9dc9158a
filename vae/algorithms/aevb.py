"""AEVB (Algorithm 1): the SGVB estimator A or B of eq. (8) plus the MAP prior, ascended jointly in the
encoder and decoder parameters with Adagrad."""

from __future__ import annotations

from vae.algorithms.base import SampleAxisModule, share
from vae.optim import Adagrad


class AEVB(SampleAxisModule):
    """Gaussian encoder (App. C.2), Bernoulli or two-head Gaussian decoder (App. C.1 / C.2)."""

    def configure_optimizers(self) -> Adagrad:
        return self.adagrad(self)

    def train_steps(self, steps: int) -> None:
        """``steps`` iterations of Algorithm 1: minibatch, noise, gradient of eq. (8) plus prior, Adagrad."""
        (opt,) = self.adagrads()
        params = list(self.parameters())
        cfg, mine = self.cfg, share(self.cfg.M)
        for _ in range(steps):
            x = self.minibatch()
            eps = self.noise(cfg.L, cfg.M, cfg.nz)[:, mine]
            loss = self.elbo(x, eps=eps).sum() / -cfg.M  # = -sum / M exactly, one kernel fewer
            for p in params:
                p.grad = None
            loss.backward()
            self.reduce_gradients(params)
            opt.step()
        self.samples += steps * self.cfg.M
