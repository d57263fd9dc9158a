"""Where a long training step stands, for the runner's progress display: §5's selection counts its iterations,
an evaluation the steps of its HMC chains. The protocol counts; the runner shows (``vae.runs.progress``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Phase:
    """A long stretch of one training step, for the progress display: ``done`` of ``total`` ``unit``s of
    ``what`` (§5's selection counts iterations; an evaluation, the steps of its HMC chains)."""

    what: str
    unit: str
    total: int
    done: int = 0

    def __str__(self) -> str:
        return f"{self.what}: {self.unit} {self.done:,d}/{self.total:,d}"


class PhaseDisplay:
    """The protocol's side of the progress display (global rank 0's, nothing collective): ``show``, set by the
    runner, at each counted point; ``write`` for the protocol's lines, so that they do not land inside a progress
    bar; ``phase``, the long stretch under way, if any."""

    def __init__(self) -> None:
        self.show: Callable[[], None] = lambda: None
        self.write: Callable[[str], None] = print
        self.phase: Phase | None = None

    def counted(self, hook: Callable[[], None]) -> Callable[[], None]:
        """``hook`` (the runner's point to stop at), then one unit more of the current phase, and the display."""

        def after() -> None:
            hook()
            if self.phase is not None:
                self.phase.done += 1
            self.show()

        return after

    @contextmanager
    def during(self, what: str, unit: str, total: int) -> Iterator[None]:
        """Within the block, the display counts ``total`` ``unit``s of ``what``."""
        self.phase = Phase(what, unit, total)
        try:
            yield
        finally:
            self.phase = None
