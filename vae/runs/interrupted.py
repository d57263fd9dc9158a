"""The end of a command on SIGINT or SIGTERM: ``Interrupted``, which the command line turns into one line and exit
status 128 + signal; ``raise_on_signals`` raises it wherever the command stands (outside a training loop, whose
own handling is ``vae.runs.signals``), or, inside an import, once that import is whole. Nothing heavy is imported
here, so the handlers go in before torch loads."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# how often a signal that came during an import is tried again, until the import is whole
RETRY_SECONDS = 0.05


class Interrupted(BaseException):
    """A command stopped on a signal (a training after writing every run's checkpoint); the process exits with
    128 + signal. Like ``KeyboardInterrupt`` it is not an ``Exception``, which libraries' broad handlers (an
    optional import tried, say) would swallow."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` stands inside an import: a module's code being run, or a C extension being loaded, with
    the import system's frames below it."""
    while frame is not None:
        if "importlib._bootstrap" in frame.f_code.co_filename.replace("/", "."):  # frozen or from its source file
            return True
        frame = frame.f_back
    return False


@contextmanager
def raise_on_signals(message: str) -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise ``Interrupted`` with ``message`` after the signal's name (in the
    main thread, where Python handles signals); leaving it restores the handlers found on entering it.

    A signal that comes during an import is put off until the import is whole (tried again every
    ``RETRY_SECONDS``): raised inside one, it can leave a package half imported, whose next use then fails in
    its own way (numpy's C extensions with "cannot load module more than once per process", or a
    ``RecursionError``) instead of ending the command with its one line. Start-up imports take seconds."""
    main_thread = threading.main_thread()
    pending: list[threading.Timer] = []  # the retry not yet made (the earlier ones have been)

    def stop(signum: int, frame: FrameType | None) -> None:
        if importing(frame):  # a real signal again, which also ends a sleep or a wait of the main thread
            pending[:] = [threading.Timer(RETRY_SECONDS, signal.pthread_kill, (main_thread.ident, signum))]
            pending[0].daemon = True
            pending[0].start()
            return
        raise Interrupted(signum, f"{signal.Signals(signum).name}: {message}")

    main = threading.current_thread() is main_thread
    previous = {signum: signal.signal(signum, stop) for signum in SIGNALS} if main else {}
    try:
        yield
    finally:
        for retry in pending:
            retry.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_signals() -> None:
    """From here on SIGINT and SIGTERM are ignored. For a process whose command has returned: what remains is the
    interpreter's clean-up (about a second once torch and Lightning are loaded), in which no Python handler runs and
    the default ones would end the process without a word, or with a traceback; it then exits with the command's
    status."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
