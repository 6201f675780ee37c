"""Fixtures shared by the unit tests."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def handlers():
    """servebench's signal handlers installed (signals.interruptible), pytest's own put back after."""
    from servebench.signals import interruptible

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interruptible()
    yield
    for s, h in before.items():
        signal.signal(s, h)
