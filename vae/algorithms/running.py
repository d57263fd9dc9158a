"""The paper's train curve: each model's running sum of its minibatch bounds (the objective before the update,
without the weight prior) since the last logged running average, summed on the device with no host sync."""

from __future__ import annotations

import torch
from torch import nn

from vae.algorithms.parallel import sum_over_ranks


class RunningBound(nn.Module):
    """The k models' sums (float64, on the stack's device) and the sample count they started at; ``active``:
    whether a running average is logged at all (``running_every``)."""

    sums: torch.Tensor  # a buffer

    def __init__(self, k: int, active: bool) -> None:
        super().__init__()
        self.active = active
        self.register_buffer("sums", torch.zeros(k, dtype=torch.float64), persistent=False)
        self.since = 0

    def bound_sums(self, bounds: torch.Tensor) -> torch.Tensor | None:
        """Each model's sum of its minibatch bounds (k, n: this rank's share), in float64, for ``accumulate``;
        None, and nothing computed, where no running average is logged."""
        return bounds.detach().sum(-1, dtype=torch.float64) if self.active else None

    def accumulate(self, sums: torch.Tensor | None) -> None:
        """Add one iteration's ``bound_sums`` to each model's running sum (nothing for None)."""
        if sums is not None:
            self.sums += sums

    def average(self, samples: int, per_step: int, M: int) -> list[float]:
        """Each model's average minibatch bound per datapoint over the iterations from ``since`` to ``samples``
        (``per_step`` samples each), summed over the ranks; the running sum starts again from here."""
        sum_over_ranks(self.sums)
        iterations = (samples - self.since) // per_step
        values = [float(v) / (iterations * M) for v in self.sums]
        self.sums.zero_()
        self.since = samples
        return values
