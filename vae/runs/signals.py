"""Stopping on SIGINT or SIGTERM, within seconds, with one line and exit status 128 + signal.

Outside a training loop (start-up, data loading, the schedule, ``tables``, ``figures``, ``log-px``) the signal
raises ``Interrupted`` where the command stands (``raise_on_signals``), or, inside an import, once that import is
whole: files are written atomically, so each is whole or untouched. Inside a training loop it is recorded, and
the training stops at the next point where every run's state is whole: after the current iteration (or block of
iterations under DDP), or between two transitions of an evaluation's HMC chains (the point is evaluated again on
resuming). The checkpoint of every run of the stack is written there, so that running the same command again
continues exactly.

Lightning 2.6 on its own: SIGINT is Python's ``KeyboardInterrupt``, raised anywhere inside a step, which ``fit``
answers with exit status 1; SIGTERM sets ``trainer.received_sigterm`` and the loops raise ``SIGTERMException`` (a
``SystemExit`` with no code: exit status 0) at the end of a step, after the ``on_exception`` hooks have run. Here
both signals are recorded by one handler and end the step the same way: ``StopOnSignal`` raises
``SIGTERMException`` at the training batch's end, at the same step on every rank, and saves the checkpoint in
``on_exception``; the caller turns the stop into exit status 128 + signal. Lightning's SIGTERM handler is replaced
while the training loop runs, because it starts a collective from inside the handler, which mismatches the ranks'
collectives when several DDP ranks get the signal (Ctrl+C, a scheduler, or Lightning passing it on to its ranks).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae.runs.interrupted import SIGNALS


class StopOnSignal(L.Callback):
    """Within ``with StopOnSignal(path):`` SIGINT and SIGTERM are recorded rather than acted on (from the start of
    the training loop on, by this handler alone); the Trainer then stops at the next training-batch end (under DDP
    when any rank got a signal) and saves the checkpoint to ``path``. Leaving the block restores the handlers found
    on entering it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            self._previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        return self

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous:  # replaces Lightning's SIGTERM handler, which its teardown swaps back for this one
            signal.signal(signal.SIGTERM, self._record)
        self.check(trainer)  # a signal during the Trainer's setup

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Stop here if a signal came (on any rank): raises ``SIGTERMException``, after which ``on_exception``
        saves the checkpoint. Called at the training's start, at every training batch's end and, inside a long
        training step, between its iterations, its blocks and its HMC transitions; under DDP every rank calls it
        at the same points."""
        signum = self.signum or 0
        if trainer.world_size > 1:  # every rank stops at the same step (saving is collective)
            got = torch.tensor(signum, device=trainer.strategy.root_device)
            signum = int(trainer.strategy.reduce(got, reduce_op="max"))
        if signum:
            self.signum = signum
            raise SIGTERMException(128 + signum)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
