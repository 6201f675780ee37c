"""Stops a Ray worker's servers when the worker dies without its `finally` (force-cancel, OOM
kill, a lost raylet). Launched servers run in their own session (launchers/process.py) so a
normal stop reaches every engine worker; that same session outlives a SIGKILLed parent. This
watchdog, started by the group task in a session of its own, remembers the parent's
descendants and, once the parent is gone, stops them the way the launcher would (TERM, then
KILL). Usage: python -m servebench.sweep.reaper PARENT_PID."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 10.0


def _snapshot(parent: psutil.Process) -> dict[int, int]:
    """pid -> process group of every descendant (this watchdog excluded)."""
    out: dict[int, int] = {}
    try:
        kids = parent.children(recursive=True)
    except psutil.Error:
        return out
    for p in kids:
        if p.pid == os.getpid():
            continue
        try:
            out[p.pid] = os.getpgid(p.pid)
        except OSError:
            continue
    return out


def _gone(parent: psutil.Process) -> bool:
    try:
        return not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _stop(seen: dict[int, int], parent_pgid: int | None) -> None:
    # a descendant that leads its own group (a launched server) is stopped with its whole group
    groups = {g for pid, g in seen.items() if g == pid and g != parent_pgid}
    singles = [pid for pid, g in seen.items() if g not in groups]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in groups:
            try:
                os.killpg(g, sig)
            except OSError:
                pass
        for pid in singles:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline and any(psutil.pid_exists(p) and _alive(p) for p in seen):
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver is not ours
    try:
        parent = psutil.Process(int(argv[0]))
        parent_pgid = os.getpgid(parent.pid)
    except (IndexError, ValueError, psutil.Error, OSError):
        return 2
    seen: dict[int, int] = {}
    while not _gone(parent):
        seen = _snapshot(parent) or seen
        time.sleep(POLL_S)
    _stop(seen, parent_pgid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
