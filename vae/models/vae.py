"""One run's model, the LightningModule to reuse: the Gaussian encoder q(z|x) (App. C.2) and the Bernoulli or
two-head Gaussian decoder p(x|z) (App. C.1, C.2) of a config, initialised from N(0, init_std^2) (§5).

It knows nothing of training: the update rules of ``vae.algorithms`` train stacks of these models, and a run's
checkpoint holds one of them (``state_dict`` and ``hyper_parameters``), so ``VAE.load_from_checkpoint(path)``
gives back the trained model.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from vae.config import Config, make_config
from vae.data import X_DIM
from vae.models.bounds import elbo
from vae.models.nets import Decoder, GaussianMLP, init_normal_, make_decoder


def uses_encoder(cfg: Config) -> bool:
    """Monte Carlo EM (App. E) samples the posterior with HMC instead of learning q(z|x)."""
    return cfg.algorithm != "mcem"


class VAE(L.LightningModule):
    """``encoder`` (None for MCEM) and ``decoder`` of ``config``; every parameter drawn from N(0, init_std^2)
    with a generator seeded by ``seed``, encoder first."""

    def __init__(self, config: Config | dict[str, Any]) -> None:
        super().__init__()
        cfg = config if isinstance(config, Config) else make_config(config)
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.cfg = cfg
        x_dim = X_DIM[cfg.dataset]
        self.encoder: GaussianMLP | None = GaussianMLP(x_dim, cfg.hidden, cfg.nz) if uses_encoder(cfg) else None
        self.decoder: Decoder = make_decoder(cfg.decoder, cfg.nz, cfg.hidden, x_dim, cfg.decoder_logvar_floor)
        init_normal_(self, cfg.init_std, torch.Generator().manual_seed(cfg.seed))

    def elbo(self, x: torch.Tensor, estimator: str | None = None, L: int | None = None,
             generator: torch.Generator | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Lower bound per datapoint (eq. 6 or eq. 7) with this model's encoder and decoder."""
        if self.encoder is None:
            raise ValueError("a model trained by MCEM has no encoder, hence no lower bound")
        return elbo(x, self.encoder, self.decoder, estimator or self.cfg.estimator, L or self.cfg.L, generator, eps)
