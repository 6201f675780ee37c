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
from pathlib import Path
from multiprocessing.connection import Connection, wait
from time import perf_counter_ns
from typing import Callable

from servebench.errors import first_line
from servebench.signals import shielded
from servebench.records import RequestRecord
from servebench.load.loop import LoadPlan, LoadStats, drive, new_loop
from servebench.load.split import Part, SplitLoad, batches, jobs
from servebench.load import spooled

START_MARGIN_NS = 50_000_000  # t0 this far after the last worker is ready: time to deliver it


class WorkerError(RuntimeError):
    pass


def run_split(load: SplitLoad) -> LoadStats:
    """Drive `load.wires` (prepared requests) across `load.workers` processes from one shared
    t0; returns load.stats, every worker's pooled."""
    parts = load.parts()
    chans: list[_Proc] = []
    for job in jobs(load, parts):
        # a fresh interpreter (not fork: it would copy the parent's threads, e.g. telemetry
        # samplers; not multiprocessing spawn: it re-imports the caller's __main__)
        mine, theirs = socket.socketpair()
        p = subprocess.Popen([sys.executable, "-m", "servebench.load.workers", str(theirs.fileno())],
                             pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        chans.append(_Proc(p, Connection(mine.detach())))
        chans[-1].send(job)
    try:
        collect(chans, load, parts)
    finally:
        for c in chans:
            c.close()
    return load.stats


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


def collect(chans: list, load: SplitLoad, parts: list[Part], *, wait_fn: Callable[[list, float], list] = wait,
            start_margin_ns: int = START_MARGIN_NS, ready_s: float = 120.0) -> None:
    """Run the workers' protocol to the end: wait until every one is ready, send one t0, merge
    what each sends back by position into load.records. One worker failing or Ctrl-C stops the
    others and keeps what they measured."""
    col = _Collector(chans, load, parts, start_margin_ns, ready_s)
    while live := col.live():
        try:
            for c in wait_fn(live, 0.25):
                col.receive(c)
            col.after_reads()
        except KeyboardInterrupt:
            if col.interrupted:  # a second Ctrl-C: give up on the workers
                raise
            col.interrupted = True
            col.error = col.error or "interrupted"
            col.tell(("stop",))
    col.finish()


class _Collector:
    """The parent's side of the protocol: where each worker is, and the first error."""

    def __init__(self, chans: list, load: SplitLoad, parts: list[Part], start_margin_ns: int, ready_s: float) -> None:
        self.chans, self.load, self.parts = chans, load, parts
        self.start_margin_ns, self.ready_s = start_margin_ns, ready_s
        self.deadline = time.monotonic() + ready_s  # workers must be ready (connections open) by then
        self.state = {id(c): "starting" for c in chans}
        self.done_counts = {id(c): 0 for c in chans}
        self.error: str | None = None
        self.interrupted = False
        self.started = False

    def live(self) -> list:
        return [c for c in self.chans if self.state[id(c)] not in ("done", "dead")]

    def receive(self, c) -> None:
        # a Ctrl-C in the middle of a message would leave the rest of it in the socket, and the
        # next read would take the live worker for dead and its finished requests for lost: the
        # message is read and placed whole, then the Ctrl-C is raised
        with shielded():
            self._receive(c)

    def _receive(self, c) -> None:
        try:
            msg = c.recv()
        except (EOFError, OSError):
            self.state[id(c)] = "dead"
            self.error = self.error or c.gone() or "a load worker exited without reporting"
            return
        kind = msg[0]
        if kind == "ready":
            self.state[id(c)] = "ready"
        elif kind == "progress":
            self.done_counts[id(c)] = msg[1]
        elif kind == "records":  # a batch, placed by position; a spooled run's arrays go to disk now
            self._place(c, msg[1], msg[2])
            if self.load.on_records is not None:
                self.load.on_records(msg[2])
        elif kind == "done":
            self._place(c, 0, msg[1])  # a worker that never started sends its records back here
            _merge(self.load.stats, msg[2])
            if self.load.connect_ns is not None:
                self.load.connect_ns.extend(msg[3])
            self.state[id(c)] = "done"
        elif kind == "error":
            self.state[id(c)] = "dead"
            self.error = self.error or msg[1]

    def _place(self, c, first: int, batch: list[RequestRecord]) -> None:
        positions = self.parts[self.chans.index(c)][0]
        for i, rec in zip(positions[first:], batch):
            self.load.records[i] = rec

    def after_reads(self) -> None:
        load = self.load
        if self.error and not self.interrupted:  # one worker failed: stop the others, keep their records
            self.interrupted = True
            self.tell(("stop",))
        if not self.started and all(s == "ready" for s in self.state.values()):
            self.started = True
            load.stats.t0_ns = perf_counter_ns() + self.start_margin_ns
            self.tell(("t0", load.stats.t0_ns))
            if load.on_t0 is not None:
                load.on_t0()
        elif not self.started and time.monotonic() > self.deadline and not self.error:
            self.error = f"load workers did not get ready within {self.ready_s:.0f} s"
            self.tell(("stop",))
        for c in self.chans:
            if self.state[id(c)] not in ("done", "dead") and not c.poll() and (why := c.gone()):
                self.state[id(c)] = "dead"
                self.error = self.error or why
        if load.progress is not None and self.started:
            load.progress(sum(self.done_counts.values()), len(load.records))

    def tell(self, msg: tuple) -> None:
        for c in self.chans:
            if self.state[id(c)] not in ("done", "dead"):
                try:
                    c.send(msg)
                except (OSError, ValueError):
                    pass

    def finish(self) -> None:
        if self.started:  # a worker lost after t0 took its records with it: they were due, so they failed
            records = self.load.records
            for w, c in enumerate(self.chans):
                if self.state[id(c)] == "dead":
                    for i in self.parts[w][0]:
                        if not records[i].end_ns and not records[i].error:
                            records[i].error = f"lost with its load worker: {self.error}"
        if self.error == "interrupted":
            raise KeyboardInterrupt
        if self.error:
            raise WorkerError(self.error)


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
        try:
            conn.send(("error", f"load worker: {first_line(e)}"))
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
            if msg[0] == "t0":  # (t0 on this clock, what moves this clock onto the run's: Ray actors)
                t0 = (msg[1], msg[2] if len(msg) > 2 else 0)
                loop.call_soon_threadsafe(lambda: t0_fut.done() or t0_fut.set_result(t0))
            else:
                loop.call_soon_threadsafe(stop.set)
                return

    threading.Thread(target=reader, daemon=True).start()
    sp = None
    try:
        await tr.prepare(job["connections"])
        if job.get("spool") and job.get("adapter"):
            spooled.warm()  # its one-off cost before ready: after t0 it delayed this worker's start
        conn.send(("ready",))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([t0_fut, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not t0_fut.done():
            conn.send(("done", records, stats, list(tr.connect_ns)))
            return
        t0, shift = t0_fut.result()
        sp = _spool(job, shift)
        plan = LoadPlan(job["wires"], records, job["offsets"], job["concurrency"], job["duration_ns"],
                        on_done=sp.add if sp else None, on_lags=sp.add_lags if sp else None)
        run = asyncio.ensure_future(drive(tr, plan, t0, stats=stats))
        ticker = asyncio.ensure_future(_report(conn, stats))
        await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
        ticker.cancel()
        if not run.done():
            run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        waiter.cancel()
    finally:
        await tr.close()
        # read lags left in a spool the parent reads (the run dir) stay there: read back and
        # sent, they were ~8 B a token through the pipe and in the parent's memory (issue 20)
        spooled.stop(sp, stats, keep_lags=bool(job.get("keep_lags")))
    if job.get("adapter"):
        _decode_and_drop(job["adapter"], records, [sp.path] if sp is not None else [])
    for first, batch in batches(records):
        conn.send(("records", first, batch))
    conn.send(("done", [], stats, list(getattr(tr, "connect_ns", []))))


async def _report(conn, stats: LoadStats) -> None:
    import asyncio

    while True:
        await asyncio.sleep(0.25)
        conn.send(("progress", stats.done))


def _spool(job: dict, shift_ns: int):
    """This worker's spool (store/spool.py), where the job names one and the records are decoded here."""
    if not (job.get("spool") and job.get("adapter")):
        return None
    return spooled.start(Path(job["spool"]), job["adapter"], shift_ns=shift_ns)


def _decode_and_drop(adapter: str, records: list[RequestRecord], spools: list) -> None:
    """Decoded here, in parallel; a spooled worker's token arrays go to disk beside its spool
    as they are decoded (store/tokens.py) and come back a batch at a time to be sent."""
    from servebench.adapters import ADAPTERS
    spooled.decode_all(ADAPTERS[adapter], records, spools, Path(spools[0]).parent if spools else None)
    for r in records:
        r.chunks = []


def _child() -> None:
    conn = Connection(int(sys.argv[1]))
    _worker_main(conn, conn.recv())


if __name__ == "__main__":
    _child()
