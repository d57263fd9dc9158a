"""Wall time by phase, read only at synchronised points.

Device work is asynchronous: host time around a launch measures the launch, not the work. ``PhaseClock.lap``
first waits for everything queued on the device, then charges the wall time since the previous lap to a phase
(training, step-size selection, evaluation, checkpoints), so each phase's total is the time it really took.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch


class PhaseClock:
    """``start()`` once, then ``lap(phase)`` at each phase boundary; ``totals`` holds the seconds per phase and
    ``synced`` the host time of the last synchronised point."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.synced = 0.0

    def sync(self) -> float:
        """Wait for the device's queued work; the host time then."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self.synced = self.sync()

    def lap(self, phase: str) -> float:
        """The seconds since the last lap, once the device has finished them, charged to ``phase``."""
        now = self.sync()
        spent, self.synced = now - self.synced, now
        self.totals[phase] += spent
        return spent


class TrainingTime:
    """A stack's time on the sample axis: its ``PhaseClock``, each run's training seconds (runs stacked together
    may have different pasts), and the training rate between logged points, measured at synchronised points."""

    def __init__(self, k: int) -> None:
        self.clock = PhaseClock(torch.device("cpu"))
        self.train_seconds = [0.0] * k
        self.seconds = 0.0  # training seconds of this session
        self.synced_samples = 0  # samples at the last synchronised point
        self._since = (0, 0.0)  # (samples, this session's training seconds) at the last logged point

    def start(self, device: torch.device, samples: int) -> None:
        """A session starts at ``samples``."""
        self.clock = PhaseClock(device)
        self.clock.start()
        self._since = (samples, self.seconds)
        self.synced_samples = samples

    def lap_training(self) -> float:
        """Charge the time since the last lap to training (and to every run's training seconds)."""
        spent = self.clock.lap("train")
        self.seconds += spent
        self.train_seconds = [t + spent for t in self.train_seconds]
        return spent

    def selected(self, samples: int, candidates: int) -> None:
        """Charge the time since the last lap to §5's selection of one of ``candidates`` step sizes. The first rate
        counts one candidate's share of it, as if the winner alone had trained."""
        spent = self.clock.lap("select")
        self._since = (0, self.seconds - spent / candidates)
        self.synced_samples = samples

    def rate(self, samples: int) -> float:
        """Training samples per second since the last logged point; ``samples`` becomes the last."""
        done, seconds = self._since
        self._since = (samples, self.seconds)
        return (samples - done) / max(self.seconds - seconds, 1e-9)

    @property
    def synced(self) -> tuple[int, float]:
        """(samples, host time) at the last synchronised point: what an honest rate is measured between."""
        return self.synced_samples, self.clock.synced
