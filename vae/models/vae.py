"""One run's model, the LightningModule to reuse: the Gaussian encoder q(z|x) (App. C.2) and the Bernoulli or
two-head Gaussian decoder p(x|z) (App. C.1, C.2) of a config, initialised from N(0, init_std^2) (§5).

It knows nothing of training: the update rules of ``vae.algorithms`` train stacks of these models, and a run's
checkpoint holds one of them (``state_dict`` and ``hyper_parameters``), so ``VAE.load_from_checkpoint(path)``
gives back the trained model. Its methods take batches as rows, of the model's dtype and device, and refuse
anything else in one line that says what they expect (28 x 28 images, float64, another Nz).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from vae.config import Config, stored_config
from vae.data import X_DIM
from vae.models.bounds import elbo
from vae.models.marginal import log_marginal_is
from vae.models.nets import Decoder, GaussianMLP, init_normal_, make_decoder


def uses_encoder(cfg: Config) -> bool:
    """Monte Carlo EM (App. E) samples the posterior with HMC instead of learning q(z|x)."""
    return cfg.algorithm != "mcem"


class VAE(L.LightningModule):
    """``encoder`` (None for MCEM) and ``decoder`` of ``config``; every parameter drawn from N(0, init_std^2)
    with a generator seeded by ``seed``, encoder first; then, with ``encoder_logvar_zero_init``, the encoder's
    log-variance head set to zero."""

    def __init__(self, config: Config | dict[str, Any]) -> None:  # a dict: a stored config (a checkpoint's)
        super().__init__()
        cfg = config if isinstance(config, Config) else stored_config(config, "the checkpoint's config")
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.cfg = cfg
        x_dim = X_DIM[cfg.dataset]
        self.encoder: GaussianMLP | None = None
        if uses_encoder(cfg):
            self.encoder = GaussianMLP(x_dim, cfg.hidden, cfg.nz, logvar_scale=cfg.encoder_logvar_scale)
        self.decoder: Decoder = make_decoder(cfg.decoder, cfg.nz, cfg.hidden, x_dim, cfg.decoder_logvar_floor)
        self.data_dir: Path | None = None  # the data folder of the run it was loaded from (``vae.load_run``)
        init_normal_(self, cfg.init_std, torch.Generator().manual_seed(cfg.seed))
        if self.encoder is not None and cfg.encoder_logvar_zero_init:
            with torch.no_grad():
                for p in self.encoder.logvar.parameters():
                    p.zero_()

    def _encoder(self) -> GaussianMLP:
        if self.encoder is None:
            raise ValueError("a model trained by MCEM has no encoder q(z|x)")
        return self.encoder

    def check_batch(self, name: str, batch: Any, width: int) -> None:
        """Refuse ``batch`` unless it is a tensor (n, ``width``) of the model's dtype, on its device, in one line
        (``expected x of shape (n, 784) and dtype torch.float32, got (5, 28, 28) torch.float64``): a TypeError
        for another type or dtype, else a ValueError."""
        like = next(self.decoder.parameters())
        expected = f"{name} of shape (n, {width}) and dtype {like.dtype}"
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"expected {expected}, got a {type(batch).__name__}")
        got = f"{tuple(batch.shape)} {batch.dtype}"
        if batch.device != like.device:
            raise ValueError(
                f"expected {expected} on {like.device}, got {got} on {batch.device}; move it: "
                f"{name}.to({str(like.device)!r})"
            )
        if batch.dim() != 2 or batch.shape[1] != width:
            flat = batch.dim() > 2 and batch[0].numel() == width
            raise ValueError(
                f"expected {expected}, got {got}" + (f"; flatten it: {name}.reshape(len({name}), -1)" if flat else "")
            )
        if batch.dtype != like.dtype:
            raise TypeError(f"expected {expected}, got {got}; convert it: {name}.to({like.dtype})")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) for a batch x (n, D): its mean and log-variance (n, Nz), eq. (9)/(12)."""
        self.check_batch("x", x, X_DIM[self.cfg.dataset])
        return self._encoder()(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) for a batch z (n, Nz): Bernoulli probabilities (eq. 11) or the Gaussian mean
        (eq. 12), (n, D)."""
        self.check_batch("z", z, self.cfg.nz)
        return self.decoder.observe(z)[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z) = N(0, I) decoded to the mean of p(x|z), as Figure 5 shows them, (n, D)."""
        like = next(self.decoder.parameters())
        z = torch.randn((n, self.cfg.nz), generator=generator, device=like.device, dtype=like.dtype)
        return self.decode(z)

    def elbo(
        self,
        x: torch.Tensor,
        estimator: str | None = None,
        L: int | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Lower bound per datapoint (eq. 6 or eq. 7) with this model's encoder and decoder, for a batch x (n, D)."""
        self.check_batch("x", x, X_DIM[self.cfg.dataset])
        return elbo(x, self._encoder(), self.decoder, estimator or self.cfg.estimator, L or self.cfg.L, generator, eps)

    def log_marginal(self, x: torch.Tensor, k: int = 5000, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) per datapoint by importance sampling with q(z|x) as proposal and k samples (the prior when
        there is no encoder): a stochastic lower bound that rises towards log p(x) with k; x is a batch (n, D)."""
        self.check_batch("x", x, X_DIM[self.cfg.dataset])
        generator = generator or torch.Generator(self.device).manual_seed(0)
        return log_marginal_is(x, self.decoder, self.encoder, generator, k=k)
