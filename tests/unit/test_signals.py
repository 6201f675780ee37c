"""Ctrl-C during teardown is held back until servers are stopped and results written."""

from __future__ import annotations

import os
import signal

import pytest

from servebench.signals import interruptible, shielded


def test_interrupt_inside_shield_is_held_back_and_handlers_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interruptible()
        done = []
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("teardown finished")
        assert done == ["teardown finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):  # outside the shield both stop the run again
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_hangup_tears_down_like_ctrl_c_and_is_held_during_teardown():
    from servebench.signals import interrupt_cause

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        interruptible()
        with pytest.raises(KeyboardInterrupt):  # the terminal closed: stop, then tear down
            os.kill(os.getpid(), signal.SIGHUP)
        assert interrupt_cause() == ("SIGHUP", 129)
        with shielded():
            os.kill(os.getpid(), signal.SIGHUP)  # held: the teardown finishes
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # under nohup
        interruptible()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for s, h in before.items():
            signal.signal(s, h)
