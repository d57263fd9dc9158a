"""The wake-sleep baseline of Figure 2 (Hinton, Dayan, Frey & Neal 1995) with the same networks as AEVB, for a
stack of k models.

Following the authors' ``wzoptim.step_wakesleep``: each iteration has a wake phase, an Adagrad step on the
generative parameters theta along the gradient of log p(x, z) for z ~ q(z|x) on a minibatch of M training
datapoints, and a sleep phase, an Adagrad step on the recognition parameters phi along the gradient of
log q(z|x) for M fantasies (z, x) ~ p(z) p(x|z). Both phases carry the MAP prior scaled by 1/N and have
their own Adagrad accumulators. Only the wake phase evaluates training samples. The lower bound is
evaluated exactly as for AEVB, with the recognition model as q; the running average of the paper's train curve
takes, as the authors' ``loop_pvem`` does, the wake phase's one-sample bound log p(x|z) + log p(z) - log q(z|x)
before the update.
"""

from __future__ import annotations

import torch
from torch import nn

from vae.algorithms.optim import adagrad_step
from vae.algorithms.parallel import share
from vae.algorithms.stack import Stack
from vae.models.bounds import reparameterize
from vae.models.densities import log_normal, log_std_normal


class WakeSleep(Stack):
    def optimized_modules(self) -> list[nn.Module]:
        return [self.decoder, self._encoder()]

    def fantasies(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, x) ~ p(z) p(x|z) for every model, (k, n, Nz) and (k, n, D): Bernoulli draws, or Gaussian draws
        around the decoder mean."""
        z = self.draws.normal(n)
        mean, logvar = self.region(self.decoder.observe)(z)
        if logvar is None:
            return z, self.draws.bernoulli(mean)
        noise = self.draws.normal(n, sizes=[mean.shape[-1]] * self.k)
        return z, mean + torch.exp(0.5 * logvar) * noise

    def step(self) -> None:
        """One iteration for every model: the wake phase's Adagrad step on theta, then the sleep phase's on phi.
        Under DDP each rank takes its share of the M datapoints and of the M fantasies (drawn in full on every
        rank); both losses are sums divided by M, reduced over ranks."""
        wake_opt, sleep_opt = self.optimizers
        M, mine = self.cfg.M, share(self.cfg.M)
        x = self.draws.minibatch(self.train_x)
        wake, sums = self.region(self.wake_objective)(x, self.draws.normal(M)[:, mine])
        self.running.accumulate(sums)
        adagrad_step(wake_opt, wake)

        with torch.no_grad():
            z, x = self.fantasies(M)
        adagrad_step(sleep_opt, self.region(self.sleep_objective)(z[:, mine], x[:, mine]))

    def wake_objective(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The wake loss, -(1/M) sum log p(x, z) for z ~ q(z|x) (a sample: no gradient reaches phi), and each
        model's sum of the one-sample bounds log p(x|z) + log p(z) - log q(z|x) for the running average. The
        prior term log p(z) is constant in theta, so only log p(x|z) carries the gradient."""
        with torch.no_grad():
            mean, logvar = self._encoder()(x)
            z = reparameterize(mean, logvar, eps)
        log_px = self.decoder.log_prob(x, z)
        sums = None
        if self.running.active:
            with torch.no_grad():
                sums = self.running.bound_sums(log_px + log_std_normal(z) - log_normal(z, mean, logvar))
        return log_px.sum() / -self.cfg.M, sums

    def sleep_objective(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The sleep loss, -(1/M) sum log q(z|x) over the fantasies (z, x)."""
        return log_normal(z, *self._encoder()(x)).sum() / -self.cfg.M
