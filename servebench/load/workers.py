"""`--workers N`: one load plan driven by N processes, each with its own event loop.

One Python event loop reads every stream on one core; past a few hundred fast streams its
reads queue behind each other and that queueing lands in TTFT/ITL. Worker processes split
the reads. The parent computes the global plan and splits it (schedule.split_plan: requests
round-robin with their global release offsets, concurrency divided as evenly as possible), every
worker opens its connections, and only then the parent picks ONE t0 (perf_counter_ns:
CLOCK_MONOTONIC, the same clock in every process on a host) for all. Records come back over a
pipe and are merged by position into one run.

Ctrl-C: workers ignore SIGINT; the parent tells them to stop, collects what they measured and
re-raises, so an interrupted run still keeps its records.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import fields
from multiprocessing.connection import Connection, wait
from time import perf_counter_ns
from typing import Any, Callable

from servebench.records import RequestRecord
from servebench.load.loop import LoadPlan, LoadStats, drive, new_loop
from servebench.load.schedule import split_plan

START_MARGIN_NS = 50_000_000  # t0 this far after the last worker is ready: time to deliver it


class WorkerError(RuntimeError):
    pass


def run_split(base_url: str, kind: str, wires: list[Any], records: list[RequestRecord],
              offsets_ns: list[int] | None, concurrency: int | None, duration_ns: int | None,
              workers: int, *, connections: int | None = None, timeout_s: float = 600.0,
              progress: Callable[[int, int], None] | None = None, stats: LoadStats | None = None,
              connect_ns: list[int] | None = None, on_t0: Callable[[], None] | None = None,
              adapter: str | None = None) -> LoadStats:
    """Drive `wires` (prepared requests) across `workers` processes from one shared t0.
    `records[i]` is replaced by the worker's filled copy. `connections`: how many to open
    before t0 in total (default: the concurrency, or one per request). The returned stats
    pool every worker's (cpu_ns: the sum of the workers' load-loop CPU); `connect_ns` gets the
    set-up time of every connection the workers opened. `on_t0()` runs once t0 is sent.
    `adapter` (a key of ADAPTERS): each worker decodes its records after the load and sends
    them back without the raw bytes, so decoding runs in parallel and the pipes carry little."""
    n = len(records)
    parts = split_plan(list(range(n)), offsets_ns, concurrency, workers)
    total_conns = connections or concurrency or n
    chans: list[_Proc] = []
    for job in jobs(wires, records, parts, total_conns, base_url, kind, timeout_s, adapter, duration_ns):
        # a fresh interpreter (not fork: it would copy the parent's threads, e.g. telemetry
        # samplers; not multiprocessing spawn: it re-imports the caller's __main__)
        mine, theirs = socket.socketpair()
        p = subprocess.Popen([sys.executable, "-m", "servebench.load.workers", str(theirs.fileno())],
                             pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        chans.append(_Proc(p, Connection(mine.detach())))
        chans[-1].send(job)
    stats = stats or LoadStats()
    try:
        collect(chans, parts, records, stats, progress, n, connect_ns, on_t0)
    finally:
        for c in chans:
            c.close()
    return stats


def jobs(wires, records, parts, total_conns, base_url, kind, timeout_s, adapter, duration_ns) -> list[dict]:
    """What each worker is sent: its share of the plan and how many connections to open."""
    return [dict(base_url=base_url, kind=kind, timeout_s=timeout_s, adapter=adapter, wires=[wires[i] for i in idx],
                 records=[records[i] for i in idx], offsets=offs, concurrency=conc, duration_ns=duration_ns,
                 connections=max(1, min(len(idx), conc or len(idx), -(-total_conns // len(parts)))))
            for idx, offs, conc in parts]


class _Proc:
    """A local worker process and its pipe, as `collect` talks to a worker (the Ray form is
    ray_workers.ActorChannel). fileno() lets multiprocessing's wait() select on it."""

    def __init__(self, proc: subprocess.Popen, conn: Connection) -> None:
        self.proc, self.conn = proc, conn

    def send(self, msg) -> None:
        self.conn.send(msg)

    def recv(self):
        return self.conn.recv()

    def poll(self) -> bool:
        return self.conn.poll()

    def fileno(self) -> int:
        return self.conn.fileno()

    def gone(self) -> str | None:
        rc = self.proc.poll()
        return None if rc is None else f"load worker {self.proc.pid} died (exit code {rc})"

    def close(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


def collect(chans: list, parts, records, stats, progress, n, connect_ns, on_t0, *,
            wait_fn: Callable[[list, float], list] = wait, start_margin_ns: int = START_MARGIN_NS,
            ready_s: float = 120.0) -> None:
    """Run the workers' protocol to the end: wait until every one is ready, send one t0, merge
    what each sends back by position. One worker failing or Ctrl-C stops the others and keeps
    what they measured."""
    state = {id(c): "starting" for c in chans}
    done_counts = {id(c): 0 for c in chans}
    error: str | None = None
    interrupted = False
    started = False
    deadline = time.monotonic() + ready_s  # workers must be ready (connections open) by then
    while any(s not in ("done", "dead") for s in state.values()):
        try:
            ready = wait_fn([c for c in chans if state[id(c)] not in ("done", "dead")], 0.25)
            for c in ready:
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    state[id(c)] = "dead"
                    error = error or c.gone() or "a load worker exited without reporting"
                    continue
                kind = msg[0]
                if kind == "ready":
                    state[id(c)] = "ready"
                elif kind == "progress":
                    done_counts[id(c)] = msg[1]
                elif kind == "done":
                    w = chans.index(c)
                    for i, rec in zip(parts[w][0], msg[1]):
                        records[i] = rec
                    _merge(stats, msg[2])
                    if connect_ns is not None:
                        connect_ns.extend(msg[3])
                    state[id(c)] = "done"
                elif kind == "error":
                    state[id(c)] = "dead"
                    error = error or msg[1]
            if error and not interrupted:  # one worker failed: stop the others, keep their records
                interrupted = True
                _tell(chans, state, ("stop",))
            if not started and all(s == "ready" for s in state.values()):
                started = True
                stats.t0_ns = perf_counter_ns() + start_margin_ns
                _tell(chans, state, ("t0", stats.t0_ns))
                if on_t0 is not None:
                    on_t0()
            elif not started and time.monotonic() > deadline and not error:
                error = f"load workers did not get ready within {ready_s:.0f} s"
                _tell(chans, state, ("stop",))
            for c in chans:
                if state[id(c)] not in ("done", "dead") and not c.poll() and (why := c.gone()):
                    state[id(c)] = "dead"
                    error = error or why
            if progress is not None and started:
                progress(sum(done_counts.values()), n)
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: give up on the workers
                raise
            interrupted = True
            error = error or "interrupted"
            _tell(chans, state, ("stop",))
    if started:  # a worker lost after t0 took its records with it: they were due, so they failed
        for w, c in enumerate(chans):
            if state[id(c)] == "dead":
                for i in parts[w][0]:
                    if not records[i].end_ns and not records[i].error:
                        records[i].error = f"lost with its load worker: {error}"
    if error == "interrupted":
        raise KeyboardInterrupt
    if error:
        raise WorkerError(error)


def _tell(chans: list, state: dict, msg: tuple) -> None:
    for c in chans:
        if state[id(c)] not in ("done", "dead"):
            try:
                c.send(msg)
            except (OSError, ValueError):
                pass


def _merge(into: LoadStats, part: LoadStats) -> None:
    """Counters add up (CPU too: the run's client CPU is every worker's); samples pool."""
    for f in fields(LoadStats):
        if f.name == "t0_ns":
            continue
        v = getattr(part, f.name)
        if isinstance(v, (list, array)):
            getattr(into, f.name).extend(v)
        elif isinstance(v, (int, float)):
            setattr(into, f.name, getattr(into, f.name) + v)
        elif isinstance(v, str) and v not in getattr(into, f.name):  # e.g. scheduling
            setattr(into, f.name, "; ".join(x for x in (getattr(into, f.name), v) if x))


# -- the worker process
def _worker_main(conn, job: dict, own_process: bool = True) -> None:
    """`conn`: anything with send/recv/close (a pipe here, queues in a Ray actor's thread)."""
    if own_process:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    loop = new_loop()
    try:
        loop.run_until_complete(_worker(conn, job))
    except BaseException as e:  # reported, never a traceback in the user's terminal
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        try:
            conn.send(("error", f"load worker: {msg}"))
        except OSError:
            pass
    finally:
        loop.close()
        conn.close()


async def _worker(conn: Connection, job: dict) -> None:
    import asyncio

    from servebench.transport import transport_class

    loop = asyncio.get_running_loop()
    tr = transport_class(job["kind"])(job["base_url"], timeout_s=job["timeout_s"])
    records: list[RequestRecord] = job["records"]
    stats = LoadStats()
    t0_fut: asyncio.Future = loop.create_future()
    stop = asyncio.Event()

    def reader() -> None:  # the pipe is read in a thread so the event loop never blocks on it
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = ("stop",)
            if msg[0] == "t0":
                loop.call_soon_threadsafe(lambda: t0_fut.done() or t0_fut.set_result(msg[1]))
            else:
                loop.call_soon_threadsafe(stop.set)
                return

    threading.Thread(target=reader, daemon=True).start()
    try:
        await tr.prepare(job["connections"])
        conn.send(("ready",))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([t0_fut, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not t0_fut.done():
            conn.send(("done", records, stats, list(tr.connect_ns)))
            return
        plan = LoadPlan(job["wires"], records, job["offsets"], job["concurrency"], job["duration_ns"])
        run = asyncio.ensure_future(drive(tr, plan, t0_fut.result(), stats=stats))

        async def report() -> None:
            while True:
                await asyncio.sleep(0.25)
                conn.send(("progress", stats.done))

        ticker = asyncio.ensure_future(report())
        await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
        ticker.cancel()
        if not run.done():
            run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        waiter.cancel()
    finally:
        await tr.close()
    if job.get("adapter"):
        _decode_and_drop(job["adapter"], records)
    conn.send(("done", records, stats, list(getattr(tr, "connect_ns", []))))


def _decode_and_drop(adapter: str, records: list[RequestRecord]) -> None:
    from servebench.adapters import ADAPTERS
    from servebench.analysis.decode import decode_records

    decode_records(ADAPTERS[adapter], records)
    for r in records:
        r.chunks = []


def _child() -> None:
    conn = Connection(int(sys.argv[1]))
    _worker_main(conn, conn.recv())


if __name__ == "__main__":
    _child()
