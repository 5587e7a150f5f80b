"""Ctrl+C, SIGTERM and SIGHUP: one policy for every command."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from labhop import oscompat


# Signals: one policy for every command
class Interrupted(KeyboardInterrupt):
    """Ctrl+C, SIGTERM or SIGHUP: stop what we are doing and clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptPolicy:
    """Turns Ctrl+C, SIGTERM and SIGHUP into `Interrupted`, once.

    The first signal interrupts whatever runs. While labhop then cleans up, one more only
    says it is busy (`on_busy`), and a third gives up on the cleanup. A terminal's Ctrl+C
    often arrives twice in quick succession; it must never turn into a traceback or a
    half-done cleanup.
    """

    def __init__(self, on_busy: Callable[[], None] | None = None) -> None:
        self.on_busy = on_busy
        self.interrupted = False
        self.extra = 0

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise Interrupted(signum)
        self.extra += 1
        if self.extra == 1:
            if self.on_busy is not None:
                self.on_busy()
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self.handler)
                    for signum in oscompat.stop_signals()}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
