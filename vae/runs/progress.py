"""Progress of a stack of runs along the samples axis, and of the long phases inside one training step (§5's
step-size selection, an evaluation's HMC chains) and outside training (``log-px``): a bar on a terminal, a
heartbeat line elsewhere.

Everything shown is already on the host: the sample counter (a Python int that the training module advances
by the steps it launches), the module's ``phase`` (how many iterations or HMC steps of a long phase are done),
the bounds of the last evaluation point, and the samples and time of the module's last synchronised point
(``synced``), between which the rate and the time left are measured: host time around asynchronous launches
would count launches, not work. Nothing here reads a tensor, so the training step gains no host
synchronisation.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm

from vae.protocol.phases import Phase


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``, ``40 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{int(seconds)} s"


def display(stream: TextIO | None) -> TextIO:
    """Where progress goes: ``stream`` if given, else stderr on a terminal (for a bar), else stdout."""
    return stream or (sys.stderr if sys.stderr.isatty() else sys.stdout)


class Progress(L.Callback):
    """Samples reached of the budget, samples per second, time left and the last bound of the runs ``label``
    names (``position``, e.g. ``2/5``, places them in their sweep), or where the module's long phase stands
    (``show``). On a terminal: a tqdm bar on the samples axis (on stderr); otherwise (CI, batch jobs, log files)
    one line on stdout at most every ``seconds``. ``stream`` replaces both, a bar if it is a terminal."""

    def __init__(self, label: str, position: str, seconds: float, stream: TextIO | None = None) -> None:
        self.title = f"[{position}] {label}" if position else label
        self.seconds = seconds
        self.stream = display(stream)
        self.bar: tqdm | None = None
        self.shown = 0  # evaluation points shown beside the bar
        self.phased = False  # the bar shows a phase, not the rate and bounds
        self.drawn = 0.0  # when ``show`` last drew the bar

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self.beat = time.monotonic()
        self.first: tuple[int, float] | None = None  # the first synchronised point seen
        if self.stream.isatty():
            # tqdm's own rate is host time between updates: the postfix shows the synchronised one instead
            self.bar = tqdm(
                total=module.budget,
                initial=module.samples,
                unit="sample",
                unit_scale=True,
                desc=self.title,
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = module.time.synced
        if self.bar is not None:
            self.bar.update(module.samples - self.bar.n)
            if len(module.history[0]) != self.shown or self.phased:  # a new synchronised point, a phase ended
                self.shown, self.phased = len(module.history[0]), False
                self.bar.set_postfix_str(self.postfix(module), refresh=False)
        elif now - self.beat >= self.seconds:
            self.beat = now
            print(self.line(module), file=self.stream, flush=True)

    @rank_zero_only
    def show(self, module: Any) -> None:
        """Inside a training step, after an iteration or an HMC step: the bar, redrawn at most every
        ``mininterval`` (a tenth of a second), or a line when one is due."""
        now = time.monotonic()
        if self.bar is not None:
            if now - self.drawn >= self.bar.mininterval:
                self.drawn, self.phased = now, module.display.phase is not None
                self.bar.update(module.samples - self.bar.n)
                self.bar.set_postfix_str(self.postfix(module))
        elif now - self.beat >= self.seconds:
            self.beat = now
            print(self.line(module), file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """A line on stdout; with a bar, tqdm clears the bar, prints the line and draws the bar again below."""
        if self.bar is not None:
            tqdm.write(line, file=sys.stdout)
        else:
            print(line)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, module: Any, exception: BaseException) -> None:
        """A stop (a signal, a diverged run) ends the bar's line before the command says why."""
        self.on_train_end(trainer, module)

    def rate(self, module: Any) -> float:
        """Samples per second of wall time (evaluations and checkpoints included) between the first and the
        last synchronised point seen; 0 before there are two."""
        (done, at), (first, began) = module.time.synced, self.first or module.time.synced
        return (done - first) / (at - began) if at > began else 0.0

    def postfix(self, module: Any) -> str:
        """Beside the bar: the module's phase, or the samples per second and the last bounds."""
        if module.display.phase is not None:
            return str(module.display.phase)
        rate = self.rate(module)
        shown = [f"{rate:,.0f} samples/s"] if rate > 0 else []
        return ", ".join(shown + [self.bounds(module)])

    def line(self, module: Any) -> str:
        """``[2/5] fig2-mnist-aevb/nz5-seed0: 1,230,000 / 10,000,000 samples (12.3%), 8,120 samples/s, 18 min
        left, test/elbo at 1,000,000: -130.52``; in a phase ``[2/5] fig2-mnist-aevb/nz5-seed0: evaluating at
        2,000,000: HMC step 30/300``"""
        if module.display.phase is not None:
            return f"{self.title}: {module.display.phase}"
        done, budget = module.samples, module.budget
        rate = self.rate(module)
        left = f"{duration((budget - done) / rate)} left" if rate > 0 else "time left unknown"
        last = f", {self.bounds(module)}" if module.last_evaluation(0) else ""
        return (
            f"{self.title}: {done:,d} / {budget:,d} samples ({100 * done / budget:.1f}%), "
            f"{rate:,.0f} samples/s, {left}{last}"
        )

    @staticmethod
    def bounds(module: Any) -> str:
        """The last evaluation point's test bounds (or log p(x)), one per run of the stack."""
        rows = [module.last_evaluation(j) for j in range(len(module.history))]
        if rows[0] is None:
            return ""
        key = "test/marginal" if "test/marginal" in rows[0] else "test/elbo"
        return f"{key} at {rows[0]['samples']:,d}: {', '.join(f'{row[key]:.2f}' for row in rows)}"


class Meter:
    """Progress of a loop outside training (``log-px``): a context manager, called once per unit done, that shows
    ``Phase(what, unit, total)`` as a bar on a terminal (stderr), else as a line on stdout at most every
    ``seconds``; ``stream`` replaces both."""

    def __init__(self, what: str, unit: str, total: int, seconds: float, stream: TextIO | None = None) -> None:
        self.phase = Phase(what, unit, total)
        self.seconds = seconds
        self.stream = display(stream)
        self.beat = time.monotonic()
        self.bar = (
            tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True, leave=False)
            if self.stream.isatty()
            else None
        )

    def __call__(self) -> None:
        self.phase.done += 1
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update()
        elif now - self.beat >= self.seconds:
            self.beat = now
            print(self.phase, file=self.stream, flush=True)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
