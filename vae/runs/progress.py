"""Progress of a stack of runs along the samples axis: a bar on a terminal, a heartbeat line elsewhere.

Everything shown is already on the host: the sample counter (a Python int that the training module advances
by the steps it launches), the bounds of the last evaluation point, and the samples and time of the module's
last synchronised point (``synced``), between which the rate and the time left are measured: host time
around asynchronous launches would count launches, not work. Nothing here reads a tensor, so the training step
gains no host synchronisation.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``, ``40 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{int(seconds)} s"


class Progress(L.Callback):
    """Samples reached of the budget, samples per second, time left and the last bound of the runs ``label``
    names (``position``, e.g. ``2/5``, places them in their sweep). On a terminal: a tqdm bar on the samples
    axis (on stderr); otherwise (CI, batch jobs, log files) one line on stdout at most every ``seconds``.
    ``stream`` replaces both, a bar if it is a terminal."""

    def __init__(self, label: str, position: str, seconds: float, stream: TextIO | None = None) -> None:
        self.title = f"[{position}] {label}" if position else label
        self.seconds = seconds
        self.stream = stream or (sys.stderr if sys.stderr.isatty() else sys.stdout)
        self.bar: tqdm | None = None
        self.shown = 0  # evaluation points shown beside the bar

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self.beat = time.monotonic()
        self.first: tuple[int, float] | None = None  # the first synchronised point seen
        if self.stream.isatty():
            # tqdm's own rate is host time between updates: the postfix shows the synchronised one instead
            self.bar = tqdm(total=module.budget, initial=module.samples, unit="sample", unit_scale=True,
                            desc=self.title, file=self.stream, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = module.time.synced
        if self.bar is not None:
            self.bar.update(module.samples - self.bar.n)
            if len(module.history[0]) != self.shown:  # a new logged point, a new synchronised point
                self.shown = len(module.history[0])
                rate = self.rate(module)
                shown = [f"{rate:,.0f} samples/s"] if rate > 0 else []
                self.bar.set_postfix_str(", ".join(shown + [self.bounds(module)]), refresh=False)
        elif now - self.beat >= self.seconds:
            self.beat = now
            print(self.line(module), file=self.stream, flush=True)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def rate(self, module: Any) -> float:
        """Samples per second of wall time (evaluations and checkpoints included) between the first and the
        last synchronised point seen; 0 before there are two."""
        (done, at), (first, began) = module.time.synced, self.first or module.time.synced
        return (done - first) / (at - began) if at > began else 0.0

    def line(self, module: Any) -> str:
        """``[2/5] fig2-mnist-aevb/nz5-seed0: 1,230,000 / 10,000,000 samples (12.3%), 8,120 samples/s, 18 min
        left, test/elbo at 1,000,000: -130.52``"""
        done, budget = module.samples, module.budget
        rate = self.rate(module)
        left = f"{duration((budget - done) / rate)} left" if rate > 0 else "time left unknown"
        last = f", {self.bounds(module)}" if module.last_evaluation(0) else ""
        return (f"{self.title}: {done:,d} / {budget:,d} samples ({100 * done / budget:.1f}%), "
                f"{rate:,.0f} samples/s, {left}{last}")

    @staticmethod
    def bounds(module: Any) -> str:
        """The last evaluation point's test bounds (or log p(x)), one per run of the stack."""
        rows = [module.last_evaluation(j) for j in range(len(module.history))]
        if rows[0] is None:
            return ""
        key = "test/marginal" if "test/marginal" in rows[0] else "test/elbo"
        return f"{key} at {rows[0]['samples']:,d}: {', '.join(f'{row[key]:.2f}' for row in rows)}"
