"""Start an emulator from Python: in a subprocess (default) or a background thread.

A subprocess is what accuracy measurements want: the emulator then has its own interpreter and
GIL, so its token writes are not delayed by the client under test (and vice versa).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from servebench.emulator.core import EmulatorConfig


class EmulatorError(RuntimeError):
    pass


class EmulatorHandle:
    def __init__(self, url: str, port: int, log: Path, stop_fn, pid: int | None) -> None:
        self.url, self.port, self.log, self.pid = url, port, log, pid
        self._stop = stop_fn

    def stop(self) -> None:
        """Stop serving and flush the log. Idempotent."""
        self._stop()

    def records(self) -> list[dict[str, Any]]:
        """Per-request log records written so far (all of them once stopped)."""
        return read_log(self.log)

    def __enter__(self) -> "EmulatorHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec.get("kind") == "request":
                    out.append(rec)
    return out


def held(log: list[dict[str, Any]]) -> tuple[int, float]:
    """Streams the emulator had open: peak, and time-weighted mean from first arrival to last end."""
    ev = sorted([(r["arrival_ns"], 1) for r in log] + [(r["end_ns"], -1) for r in log])
    if not ev:
        return 0, 0.0
    cur = peak = 0
    area, last = 0.0, ev[0][0]
    for t, d in ev:
        area += cur * (t - last)
        cur, last = cur + d, t
        peak = max(peak, cur)
    return peak, area / max(1, ev[-1][0] - ev[0][0])


def start_emulator(fmt: str = "openai", ttft_ms: float = 50.0, itl_ms: float = 10.0, *,
                   mode: str = "process", port: int = 0, log: str | Path | None = None,
                   timeout_s: float = 30.0, **options: Any) -> EmulatorHandle:
    """Start an emulator and return once it listens. `options` are EmulatorConfig fields
    (jitter_ms, fail_rate, fail_mode, batch_slowdown, max_running, seed, model, ...)."""
    if log is None:
        fd, log = tempfile.mkstemp(prefix="servebench-emulator-", suffix=".jsonl")
        os.close(fd)
    cfg = EmulatorConfig(format=fmt, ttft_ms=ttft_ms, itl_ms=itl_ms, port=port, log=str(log), **options)
    if mode == "process":
        return _start_process(cfg, timeout_s)
    if mode == "thread":
        return _start_thread(cfg, timeout_s)
    raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")


def _start_process(cfg: EmulatorConfig, timeout_s: float) -> EmulatorHandle:
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([sys.executable, "-m", "servebench.emulator.server", cfg.model_dump_json()],
                         stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    # the process is torn down even if the caller forgets stop() or dies on an exception
    fin = weakref.finalize(p, _terminate, p)
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or p.poll() is not None or not select.select([p.stdout], [], [], left)[0]:
            fin()
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()
            raise EmulatorError(f"emulator did not start: {tail[-1] if tail else 'timed out'}")
        b = os.read(p.stdout.fileno(), 4096)
        if not b:
            continue
        line += b
    info = json.loads(line)
    return EmulatorHandle(info["url"], info["port"], Path(cfg.log), fin, p.pid)


def _terminate(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p.stdout:
        p.stdout.close()


def _start_thread(cfg: EmulatorConfig, timeout_s: float) -> EmulatorHandle:
    import asyncio

    from servebench.emulator.server import new_loop, serve

    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = new_loop(cfg.loop)
    stop_ev: list[asyncio.Event] = []

    async def main() -> None:
        stop_ev.append(asyncio.Event())
        await serve(cfg, lambda info: (box.update(info), ready.set()), stop_ev[0])

    def target() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # surfaced to the caller below
            box["error"] = e
            ready.set()
        finally:
            loop.close()

    th = threading.Thread(target=target, name="servebench-emulator", daemon=True)
    th.start()
    if not ready.wait(timeout_s) or "error" in box:
        raise EmulatorError(f"emulator did not start: {box.get('error', 'timed out')}")

    def stop() -> None:
        if th.is_alive():
            loop.call_soon_threadsafe(stop_ev[0].set)
            th.join(10)

    return EmulatorHandle(box["url"], box["port"], Path(cfg.log), stop, None)
