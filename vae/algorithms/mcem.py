"""Monte Carlo EM with Hybrid Monte Carlo, the Figure 3 baseline (App. E).

No encoder: the posterior p(z|x) is sampled with HMC using the gradient of log p(z) + log p(x|z). Following
the authors' ``wzoptim.step_batch_mcem`` (digest §3.6), every training datapoint keeps a persistent chain;
an iteration is one HMC transition of every chain (``mcem_leapfrog`` leapfrog steps, step size tuned toward
``hmc_target`` acceptance) followed by ``mcem_msteps`` Adagrad steps on the decoder along the full-batch
gradient of (1/N) sum_i log p(x_i|z_i) plus the MAP prior. MCEM is not an on-line algorithm (Fig. 3
caption), so it works on the whole training set; an iteration counts ``mcem_msteps * N`` training samples
evaluated (the datapoints whose gradient enters a weight update; the HMC gradients are not counted).
"""

from __future__ import annotations

from typing import Any

import torch

from vae.algorithms.base import SampleAxisModule
from vae.densities import log_std_normal
from vae.hmc import hmc_step, posterior_log_joint
from vae.optim import Adagrad


class MCEM(SampleAxisModule):
    has_encoder = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chains: torch.Tensor | None = None  # (N, Nz), one persistent chain per training datapoint
        self.step_size: torch.Tensor | None = None

    @property
    def samples_per_step(self) -> int:
        return self.cfg.mcem_msteps * self.cfg.n_train

    def configure_optimizers(self) -> Adagrad:
        return self.adagrad(self.decoder)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.chains is None:  # a fresh run: chains start from the prior
            self.chains = torch.randn((len(self.train_x), self.cfg.nz), device=self.device, generator=self.generator)
            self.step_size = torch.tensor(self.cfg.hmc_step_size, device=self.device)
        self.chains, self.step_size = self.chains.to(self.device), self.step_size.to(self.device)

    def chain_state(self) -> dict[str, Any]:
        return {} if self.chains is None else {"z": self.chains, "step_size": self.step_size}

    def load_chain_state(self, state: dict[str, Any]) -> None:
        if state:
            self.chains, self.step_size = state["z"], state["step_size"]

    def data(self) -> torch.Tensor:
        x = self.train_x
        return torch.bernoulli(x, generator=self.generator) if self.cfg.binarize == "dynamic" else x

    def selection_score(self) -> float:
        """The MCEM objective at the current chains: the average of log p(x_i, z_i) over the training set."""
        with torch.no_grad():
            x = self.train_x
            return float((log_std_normal(self.chains) + self.decoder.log_prob(x, self.chains)).mean())

    def train_steps(self, steps: int) -> None:
        """``steps`` MCEM iterations: E-step (one HMC transition per chain), then the M-steps."""
        (opt,) = self.adagrads()
        params = list(self.decoder.parameters())
        cfg = self.cfg
        for _ in range(steps):
            x = self.data()
            step = hmc_step(posterior_log_joint(self.decoder, x), self.chains, self.step_size, self.generator,
                            n_steps=cfg.mcem_leapfrog, target=cfg.hmc_target)
            self.chains, self.step_size = step.z, step.step_size
            for _ in range(cfg.mcem_msteps):
                loss = -self.decoder.log_prob(x, self.chains).mean()
                for p in params:
                    p.grad = None
                loss.backward()
                opt.step()
        self.samples += steps * self.samples_per_step
