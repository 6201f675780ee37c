"""Stopping on signals the Ctrl-C way, so measured data is written and servers are stopped."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def interruptible() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt. A shell starts background jobs with
    SIGINT ignored, and Python then never raises on it: a benchmark must still stop cleanly."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


@contextmanager
def shielded():
    """Teardown and result writing run to the end: a second Ctrl-C (or SIGTERM) meanwhile is
    held back, never left to kill a half-stopped server or a half-written run directory."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
