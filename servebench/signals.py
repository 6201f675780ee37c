"""Stopping on signals the Ctrl-C way, so measured data is written and servers are stopped."""

from __future__ import annotations

import signal


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def interruptible() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt. A shell starts background jobs with
    SIGINT ignored, and Python then never raises on it: a benchmark must still stop cleanly."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
