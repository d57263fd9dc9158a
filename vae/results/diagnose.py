"""What a trained model does with its latent space, from a run's last checkpoint: the test-set bound of
estimator B split into its two terms (eq. 10: -KL(q(z|x) || p(z)) and E_q[log p(x|z)]), the KL split into
what the posterior means cost (sum mu^2 / 2) and what the variances cost (sum (sigma^2 - 1 - log sigma^2) / 2),
and between active and inactive latent dimensions.

The report can be taken on other inputs than the test images (``inputs``): their Bernoulli draws (binary images
whose pixel means are the grey levels) or fantasies x ~ p(x|z), z ~ p(z), the inputs a wake-sleep recognition
model is trained on in its sleep phase. What q(z|x) does with inputs it never trained on shows in its means.

A dimension u is *active* when its posterior mean varies with the data: Var_x(E_q[z_u | x]) > 0.01, the
activity statistic of Burda et al. (2016, "Importance Weighted Autoencoders"). An inactive dimension that
still costs KL is one where q(z|x) has drifted from the prior without carrying information about x.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vae.config import ConfigError
from vae.data import load_dataset
from vae.models.bounds import reparameterize
from vae.models.densities import neg_kl_std_normal
from vae.models.vae import VAE
from vae.names import INPUTS
from vae.runs.checkpoint import load_model
from vae.runs.folder import RunFolder

ACTIVE = 0.01  # Burda et al. (2016): Var_x(E_q[z_u|x]) above this marks an active latent dimension


@torch.no_grad()
def inputs_of(model: VAE, test: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """The images a report is taken on: the test images, their Bernoulli draws, or as many fantasies x ~ p(x|z)
    with z ~ N(0, I) (Bernoulli draws of the decoder's means, or Gaussian draws around them)."""
    if kind == "test":
        return test
    if kind == "bernoulli":
        if model.cfg.decoder != "bernoulli":
            raise ConfigError(f"inputs=bernoulli: the {model.cfg.decoder} decoder's data are not Bernoulli means")
        return torch.bernoulli(test, generator=generator)
    if kind != "fantasies":
        raise ConfigError(f"inputs={kind!r} is not known; choose from {list(INPUTS)}")
    z = torch.randn((len(test), model.cfg.nz), generator=generator)
    mean, logvar = model.decoder.observe(z)
    if logvar is None:
        return torch.bernoulli(mean, generator=generator)
    return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)


@torch.no_grad()
def latent_report(
    run_dir: Path, data_dir: Path | None = None, points: int = 10000, seed: int = 0, inputs: str = "test"
) -> dict[str, Any]:
    """The bound, its terms and the latent activity of the run's model on ``points`` images (the first test
    images, or what ``inputs`` makes of them), in nats per datapoint (one sample of z per image, as the
    evaluation of Figure 2)."""
    model = load_model(RunFolder(run_dir))
    if model.encoder is None:
        raise ConfigError(f"{run_dir}: {model.cfg.algorithm} has no encoder q(z|x), so no bound to split")
    x = inputs_of(model, load_dataset(model.cfg, data_dir)[1][:points], inputs, torch.Generator().manual_seed(seed + 1))
    mean, logvar = model.encoder(x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
    reconstruction = model.decoder.log_prob(x, reparameterize(mean, logvar, eps))
    kl = -neg_kl_std_normal(mean.unsqueeze(-1), logvar.unsqueeze(-1))  # (points, Nz): KL per dimension
    active = mean.var(0) > ACTIVE
    inactive = ~active
    return {
        "run": str(run_dir),
        "algorithm": model.cfg.algorithm,
        "nz": model.cfg.nz,
        "inputs": inputs,
        "points": len(x),
        "bound": float((reconstruction - kl.sum(1)).mean()),
        "reconstruction": float(reconstruction.mean()),
        "kl": float(kl.sum(1).mean()),
        "kl_means": float(0.5 * mean.pow(2).sum(1).mean()),
        "kl_variances": float(0.5 * (logvar.exp() - 1 - logvar).sum(1).mean()),
        "active_dims": int(active.sum()),
        "kl_active": float(kl[:, active].sum(1).mean()),
        "kl_inactive": float(kl[:, inactive].sum(1).mean()),
        "inactive_abs_mean": float(mean[:, inactive].abs().mean()) if inactive.any() else float("nan"),
        "inactive_var": float(logvar[:, inactive].exp().mean()) if inactive.any() else float("nan"),
    }
