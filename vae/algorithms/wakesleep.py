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

from vae.algorithms.stack import Stack, share
from vae.models.bounds import reparameterize
from vae.models.densities import log_normal, log_std_normal
from vae.models.nets import GaussianMLP


class WakeSleep(Stack):
    def optimized_modules(self) -> list[nn.Module]:
        return [self.decoder, self.encoder]

    def fantasies(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, x) ~ p(z) p(x|z) for every model, (k, n, Nz) and (k, n, D): Bernoulli draws, or Gaussian draws
        around the decoder mean."""
        z = self.normal(n)
        if isinstance(self.decoder, GaussianMLP):
            mean, logvar = self.decoder(z)
            noise = self.normal(n, sizes=[mean.shape[-1]] * self.k)
            return z, mean + torch.exp(0.5 * logvar) * noise
        return z, self.bernoulli(torch.sigmoid(self.decoder(z)))

    def step(self) -> None:
        """Under DDP each rank takes its share of the M datapoints and of the M fantasies (drawn in full on
        every rank); both losses are sums divided by M, reduced over ranks."""
        wake_opt, sleep_opt = self.optimizers
        M, mine = self.cfg.M, share(self.cfg.M)
        encoder, decoder = self.encoder, self.decoder
        theta, phi = list(decoder.parameters()), list(encoder.parameters())
        x = self.minibatch()
        with torch.no_grad():
            mean, logvar = encoder(x)
            z = reparameterize(mean, logvar, self.normal(M)[:, mine])
        # log p(x, z) = log p(x|z) + log p(z); the prior term is constant in theta (z is a sample, no
        # gradient), so only log p(x|z) is built: the same gradient, five kernels fewer
        log_px = decoder.log_prob(x, z)
        wake = log_px.sum() / -M
        if self.cfg.running_every is not None:  # the one-sample bound log p(x|z) + log p(z) - log q(z|x)
            with torch.no_grad():
                self.accumulate(log_px + log_std_normal(z) - log_normal(z, mean, logvar))
        for p in theta:
            p.grad = None
        wake.backward()
        self.reduce_gradients(theta)
        wake_opt.step()

        with torch.no_grad():
            z, x = self.fantasies(M)
        sleep = log_normal(z[:, mine], *encoder(x[:, mine])).sum() / -M
        for p in phi:
            p.grad = None
        sleep.backward()
        self.reduce_gradients(phi)
        sleep_opt.step()
