"""Graceful stops: the first SIGINT/SIGTERM asks training to stop after the current step (so a
checkpoint is written); a second one interrupts at once. Atomic checkpoint writes make the
hard stop safe too."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def graceful_stop(request_stop: Callable[[int], None]) -> Iterator[None]:
    received = 0

    def handler(signum, frame):
        nonlocal received
        received += 1
        if received == 1:
            request_stop(signum)
            return
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
