"""The wake-sleep baseline of Figure 2 (Hinton, Dayan, Frey & Neal 1995) with the same networks as AEVB.

Following the authors' ``wzoptim.step_wakesleep``: each iteration has a wake phase, an Adagrad step on the
generative parameters theta along the gradient of log p(x, z) for z ~ q(z|x) on a minibatch of M training
datapoints, and a sleep phase, an Adagrad step on the recognition parameters phi along the gradient of
log q(z|x) for M fantasies (z, x) ~ p(z) p(x|z). Both phases carry the MAP prior scaled by 1/N and have
their own Adagrad accumulators. Only the wake phase evaluates training samples. The lower bound is
evaluated exactly as for AEVB, with the recognition model as q.
"""

from __future__ import annotations

import torch

from vae.algorithms.base import SampleAxisModule, share
from vae.bounds import reparameterize
from vae.densities import log_normal
from vae.nets import GaussianMLP
from vae.optim import Adagrad


class WakeSleep(SampleAxisModule):
    def configure_optimizers(self) -> list[Adagrad]:
        return [self.adagrad(self.decoder), self.adagrad(self.encoder)]

    def fantasies(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, x) ~ p(z) p(x|z): Bernoulli draws, or Gaussian draws around the decoder mean."""
        z = torch.randn((n, self.cfg.nz), device=self.device, generator=self.generator)
        if isinstance(self.decoder, GaussianMLP):
            mean, logvar = self.decoder(z)
            noise = torch.randn(mean.shape, device=self.device, generator=self.generator)
            return z, mean + torch.exp(0.5 * logvar) * noise
        return z, torch.bernoulli(torch.sigmoid(self.decoder(z)), generator=self.generator)

    def train_steps(self, steps: int) -> None:
        """Under DDP each rank takes its share of the M datapoints and of the M fantasies (drawn in full on
        every rank, see ``SampleAxisModule``); both losses are sums divided by M, reduced over ranks."""
        wake_opt, sleep_opt = self.adagrads()
        M, nz, mine = self.cfg.M, self.cfg.nz, share(self.cfg.M)
        encoder, decoder = self.encoder, self.decoder
        theta, phi = list(decoder.parameters()), list(encoder.parameters())
        for _ in range(steps):
            x = self.minibatch()
            with torch.no_grad():
                z = reparameterize(*encoder(x), self.noise(M, nz)[mine])
            # log p(x, z) = log p(x|z) + log p(z); the prior term is constant in theta (z is a sample, no
            # gradient), so only log p(x|z) is built: the same gradient, five kernels fewer
            wake = decoder.log_prob(x, z).sum() / -M
            for p in theta:
                p.grad = None
            wake.backward()
            self.reduce_gradients(theta)
            wake_opt.step()

            with torch.no_grad():
                z, x = self.fantasies(M)
            sleep = log_normal(z[mine], *encoder(x[mine])).sum() / -M
            for p in phi:
                p.grad = None
            sleep.backward()
            self.reduce_gradients(phi)
            sleep_opt.step()
        self.samples += steps * self.cfg.M
