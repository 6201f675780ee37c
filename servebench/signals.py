"""Stopping on signals the Ctrl-C way, so measured data is written and servers are stopped."""

from __future__ import annotations

import signal
import sys
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
def cancellable():
    """A Ray task body that a cancel can stop. `ray.cancel(ref, force=False)` reaches a running
    task as a simulated SIGINT in its worker's main thread (`_thread.interrupt_main`), and
    Python drops that while SIGINT is ignored: the worker raises nothing and the task runs to
    its end. A raylet started from a background job (a script's `cmd &`, a runner without job
    control) is started with SIGINT ignored and passes that to every worker it starts; there a
    sweep's Ctrl-C let every remote cell run on to the end of its load
    (tests/integration/test_ray_sweep.py). The worker is left as it was found."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    deaf = old in (signal.SIG_IGN, signal.SIG_DFL)  # SIG_DFL: interrupt_main drops it too
    if deaf:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if deaf and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, old)


_shields: list[list[int]] = []  # the signals each open shield holds, innermost last


@contextmanager
def shielded(notice: Callable[[int], None] | None = None, deliver: bool | None = None):
    """Teardown and result writing run to the end: a second Ctrl-C (or SIGTERM) meanwhile is
    held back, never left to kill a half-stopped server or a half-written run directory.
    `notice(signum)` tells the user why their Ctrl-C did nothing (a teardown can take minutes).

    A held signal is never dropped. An inner shield hands it to the one around it. The
    outermost delivers it (KeyboardInterrupt) when its block ends, unless it was entered while
    an exception was already on its way up (that teardown is the answer to the first Ctrl-C)
    or `deliver=False` (the caller reads the yielded list and answers it itself). Dropping it
    was how a Ctrl-C pressed while a finished cell wrote its results let a sweep run on."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    if deliver is None:
        deliver = sys.exc_info()[0] is None
    got: list[int] = []

    def hold(signum, frame) -> None:
        got.append(signum)
        if notice is not None:
            notice(signum)

    held = (signal.SIGINT, signal.SIGTERM) + (() if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,))
    old = {s: signal.signal(s, hold) for s in held}
    _shields.append(got)
    ok = False
    try:
        yield got
        ok = True
    finally:
        _shields.pop()
        for s, h in old.items():
            signal.signal(s, h)
        if got and _shields:
            _shields[-1].extend(got)
        elif got and ok and deliver:
            _raise_interrupt(got[-1], None)
