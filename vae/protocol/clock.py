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
