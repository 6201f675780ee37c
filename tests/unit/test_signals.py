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
        with pytest.raises(KeyboardInterrupt):  # held to the end of the block, then honoured
            with shielded():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("teardown finished")
        assert done == ["teardown finished"]
        from servebench.signals import interrupt_cause

        assert interrupt_cause() == ("SIGTERM", 143)
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
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a terminal session, even when the suite runs under nohup
        interruptible()
        with pytest.raises(KeyboardInterrupt):  # the terminal closed: stop, then tear down
            os.kill(os.getpid(), signal.SIGHUP)
        assert interrupt_cause() == ("SIGHUP", 129)
        with pytest.raises(KeyboardInterrupt):
            with shielded():
                os.kill(os.getpid(), signal.SIGHUP)  # held: the teardown finishes, then stops
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # under nohup
        interruptible()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for s, h in before.items():
            signal.signal(s, h)




def test_a_held_ctrl_c_goes_to_the_outer_shield_and_is_raised_when_it_ends(handlers):
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with shielded():
            with shielded():  # e.g. the server's teardown inside the writing of a run
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("server stopped")
            steps.append("results written")  # not cut short by the inner shield
    assert steps == ["server stopped", "results written"]


def test_a_shield_entered_while_stopping_does_not_raise_again(handlers):
    steps = []
    with pytest.raises(ValueError):
        try:
            raise ValueError("the first failure")
        finally:
            with shielded():  # teardown on the way up: a second Ctrl-C is held and dropped
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("torn down")
    assert steps == ["torn down"]


def test_deliver_false_hands_the_signals_to_the_caller(handlers):
    with shielded(deliver=False) as held:
        os.kill(os.getpid(), signal.SIGTERM)
    assert held == [signal.SIGTERM]
    with shielded() as quiet:
        pass
    assert quiet == []


def _spin() -> None:
    for _ in range(100_000):  # the handler of a simulated signal runs at the next eval check
        pass


def test_a_ray_cancel_reaches_a_task_whose_worker_inherited_sigint_ignored(monkeypatch):
    """ray.cancel(force=False) is `_thread.interrupt_main()` in the worker, which Python drops
    while SIGINT is ignored, as it is in every worker of a raylet started from a background job:
    the sweep's remote cells ran on to their end after a Ctrl-C."""
    import _thread

    from servebench.signals import cancellable
    from servebench.sweep import ray_remote

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _thread.interrupt_main()
        _spin()  # dropped: the failure this guards against
        with pytest.raises(KeyboardInterrupt):
            with cancellable():
                _thread.interrupt_main()
                _spin()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the worker is left as found

        def body(*args):  # the group task, cancelled while it measures
            _thread.interrupt_main()
            _spin()
            return {"row": "ran to its end"}

        monkeypatch.setattr(ray_remote, "_run_remote_group", body)
        with pytest.raises(KeyboardInterrupt):
            ray_remote.run_remote_group(None, None, None, None, None, {})
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
