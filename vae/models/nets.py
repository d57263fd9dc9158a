"""The MLPs of App. C: a Gaussian MLP with two separate linear heads, and a Bernoulli MLP decoder."""

from __future__ import annotations

import torch
from torch import nn

from vae.models.densities import log_bernoulli, log_normal, softplus


class GaussianMLP(nn.Module):
    """App. C.2, eq. (12): h = tanh(W3 v + b3), mu = W4 h + b4, log sigma^2 = W5 h + b5.

    The mean and log-variance are two separate linear heads. With ``sigmoid_mean`` the mean is squashed
    into (0, 1), the paper's Frey Face decoder (§5). Used as the encoder q(z|x) (v = x) or as a decoder
    p(x|z) (v = z). ``logvar_floor`` (decoder guard, not in the paper) maps the head's output a to
    ``floor + softplus(a - floor)``: equal to a well above the floor, smooth, never below it. ``logvar_scale``
    multiplies the log-variance head's output (the authors' wake-sleep recognition model uses 0.1).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        sigmoid_mean: bool = False,
        logvar_floor: float | None = None,
        logvar_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.mean = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)
        self.sigmoid_mean = sigmoid_mean
        self.logvar_floor = logvar_floor
        self.logvar_scale = logvar_scale

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.hidden(v))
        mean, logvar = self.mean(h), self.logvar(h)
        if self.logvar_scale != 1.0:
            logvar = logvar * self.logvar_scale
        if self.logvar_floor is not None:
            logvar = self.logvar_floor + softplus(logvar - self.logvar_floor)
        return (torch.sigmoid(mean) if self.sigmoid_mean else mean), logvar

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) as a decoder; z may carry leading sample dimensions."""
        mean, logvar = self(z)
        return log_normal(x, mean, logvar)

    def observe(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """p(x|z) as a decoder: its mean and log-variance (eq. 12)."""
        return self(z)


class BernoulliMLP(nn.Module):
    """App. C.1, eq. (11): y = sigmoid(W2 tanh(W1 z + b1) + b2), the MNIST decoder."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.logits = nn.Linear(hidden, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the Bernoulli means y."""
        return self.logits(torch.tanh(self.hidden(z)))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return log_bernoulli(x, self(z))

    def observe(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """p(x|z): its means y (eq. 11), and no log-variance."""
        return torch.sigmoid(self(z)), None


Decoder = GaussianMLP | BernoulliMLP


def make_decoder(kind: str, nz: int, hidden: int, x_dim: int, logvar_floor: float | None = None) -> Decoder:
    """The decoder named by the config: "bernoulli", "gaussian" or "gaussian-sigmoid-mean"."""
    if kind == "bernoulli":
        return BernoulliMLP(nz, hidden, x_dim)
    if kind in ("gaussian", "gaussian-sigmoid-mean"):
        return GaussianMLP(nz, hidden, x_dim, kind == "gaussian-sigmoid-mean", logvar_floor)
    raise ValueError(f"unknown decoder {kind!r}")


def init_normal_(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """Every parameter, weights and biases, drawn from N(0, std^2) (§5; std = 0.01 as in the authors' code)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def weight_matrices(module: nn.Module) -> list[nn.Parameter]:
    """The parameters that carry the MAP prior N(0, I): weight matrices, not biases (authors' code)."""
    return [p for name, p in module.named_parameters() if name.endswith("weight")]
