"""Stopping on signals the Ctrl-C way, so measured data is written and servers are stopped."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable


_received: list[int] = []  # SIGTERMs seen: the run says which signal stopped it


def _raise_interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def interrupt_cause() -> tuple[str, int]:
    """(what stopped the run, exit code): SIGTERM -> 143, else Ctrl-C (SIGINT) -> 130, the
    shell's 128 + signal number. SIGINT keeps Python's own handler (asyncio.Runner cancels the
    load on it), so only SIGTERM is recorded; a KeyboardInterrupt without one is Ctrl-C."""
    if _received and _received[-1] in (signal.SIGTERM, signal.SIGHUP):
        return signal.Signals(_received[-1]).name, 128 + _received[-1]
    return "Ctrl-C", 128 + signal.SIGINT


def interruptible() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt. A shell starts background jobs with
    SIGINT ignored, and Python then never raises on it: a benchmark must still stop cleanly."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # a closed terminal or dropped ssh session would otherwise end Python without any teardown
    # (a billing endpoint, a container holding GPUs); under nohup it stays ignored
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _raise_interrupt)


@contextmanager
def shielded(notice: Callable[[int], None] | None = None):
    """Teardown and result writing run to the end: a second Ctrl-C (or SIGTERM) meanwhile is
    held back, never left to kill a half-stopped server or a half-written run directory.
    `notice(signum)` tells the user why their Ctrl-C did nothing (a teardown can take minutes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    def hold(signum, frame) -> None:
        got.append(signum)
        if notice is not None:
            notice(signum)

    held = (signal.SIGINT, signal.SIGTERM) + (() if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,))
    old = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
