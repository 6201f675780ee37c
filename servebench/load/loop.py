"""The load loop: release prepared requests on schedule and let the transport stamp them.

Nothing here parses or computes metrics. Per request it does: take a slot (if capped), call
`transport.send`, count. The records are created before the run and owned by the caller, so
whatever was measured survives a Ctrl-C or a crash of the loop.
"""

from __future__ import annotations

import asyncio
import gc
import os
from array import array
from dataclasses import dataclass, field
from time import perf_counter_ns, process_time_ns
from typing import Any, Callable, Protocol

from servebench.records import RequestRecord


class SendTransport(Protocol):
    async def send(self, wire: Any, rec: RequestRecord) -> None: ...


@dataclass(slots=True)
class LoadPlan:
    wires: list[Any]  # prepared requests (HTTP: wire bytes), one per record
    records: list[RequestRecord]
    offsets_ns: list[int] | None  # release offsets from t0; None: closed loop
    concurrency: int | None  # closed loop: the number of slots; open loop: optional cap
    duration_ns: int | None = None  # no releases after t0 + duration
    # each finished record is handed here (store/spool.py: a deque append; the bytes go to
    # disk off the loop, so memory stays flat over any run length); None: kept in memory
    on_done: Callable[[RequestRecord], None] | None = None
    # the transport's per-read lag stamps are handed here a slice at a time (8 bytes a read
    # would otherwise grow with the run); None: kept in memory
    on_lags: Callable[[array], None] | None = None


def realtime_on() -> str:
    """Run this thread (the event loop) under SCHED_RR when the OS allows.

    On a host shared with the server, the normal scheduler can leave the client's loop
    unscheduled for hundreds of ms (measured here beside vLLM's CPU build: loop lag p99 30 ms,
    max 660 ms; under SCHED_RR p99 1 ms). Every such stall lands in TTFT and starves closed-loop
    slots. The client needs little CPU, so the server loses almost nothing. Children
    (servers, workers) do not inherit it. Returns what is in force, for run records."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(10))
        return "SCHED_RR"
    except (AttributeError, OSError) as e:
        return f"normal ({getattr(e, 'strerror', None) or type(e).__name__}: real-time scheduling not permitted)"


def realtime_off() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


@dataclass(slots=True)
class LoadStats:
    t0_ns: int = 0
    released: int = 0
    done: int = 0
    loop_lag_ns: list[int] = field(default_factory=list)  # event-loop wake-up lateness probes
    read_lag_ns: array = field(default_factory=lambda: array("q"))  # per read: read time - kernel receive stamp
    cpu_ns: int = 0  # this process's CPU time (all threads) from t0 to the last response
    scheduling: str = ""  # the load loop's scheduling policy (realtime_on)


async def _lag_probe(stats: LoadStats, period_s: float = 0.05) -> None:
    """How late the event loop wakes: a stand-in for receive lag (a read waits as long)."""
    while True:
        want = perf_counter_ns() + int(period_s * 1e9)
        await asyncio.sleep(period_s)
        stats.loop_lag_ns.append(max(0, perf_counter_ns() - want))


SPILL_LAGS_AT = 4096  # read-lag stamps held before a slice is handed to the spool


async def _spill_lags(lags: array, spill: Callable[[array], None], period_s: float = 0.25) -> None:
    """The transport's read-lag stamps handed over a slice at a time. On the loop, like the
    reads that append them, so none is lost between the copy and the delete."""
    while True:
        await asyncio.sleep(period_s)
        if len(lags) >= SPILL_LAGS_AT:
            spill(lags[:])
            del lags[:]


async def _ticker(stats: LoadStats, total: int, progress: Callable[[int, int], None]) -> None:
    while True:
        progress(stats.done, total)
        await asyncio.sleep(0.25)


# asyncio's selector rounds its timeout UP to whole milliseconds (epoll), so a timer wakes up to
# ~1 ms late: the send error's p99 sat at ~1.2 ms at 200 requests/s. Sleep to this much before
# the target, then yield to the loop (reads keep being served) until it is due.
SPIN_NS = 1_500_000


async def _sleep_until(t_ns: int) -> None:
    # loops, both: a timer can also wake early (uvloop's millisecond timers do), which would
    # send a request before its scheduled time (sent_ns < scheduled_ns)
    while (delay := t_ns - perf_counter_ns()) > SPIN_NS:
        await asyncio.sleep((delay - SPIN_NS) / 1e9)
    while perf_counter_ns() < t_ns:
        await asyncio.sleep(0)


async def drive(
    transport: SendTransport,
    plan: LoadPlan,
    t0_ns: int,
    progress: Callable[[int, int], None] | None = None,
    stats: LoadStats | None = None,
    realtime: bool = True,
) -> LoadStats:
    """Run the plan starting at `t0_ns` (perf_counter_ns; may be in the future so several
    worker processes can share one start). Returns counters; timings are in plan.records."""
    stats = stats or LoadStats()
    stats.t0_ns = t0_ns
    n = len(plan.records)
    end_release = t0_ns + plan.duration_ns if plan.duration_ns else None
    lags = getattr(transport, "read_lag_ns", None)
    helpers: list[asyncio.Task] = []
    if progress is not None:
        helpers.append(asyncio.create_task(_ticker(stats, n, progress)))
    tasks: list[asyncio.Task] = []
    cpu0 = 0
    # A full collection walks every object the process holds (tokenizer, transformers, pandas:
    # millions) and stalls the loop for hundreds of ms, which lands in TTFT and starves
    # slots: none runs during the load. Nor one here before it: in a large process it took
    # 400 ms and ran past a t0 agreed with other workers (tests/unit/test_ray_workers.py).
    stats.scheduling = realtime_on() if realtime else "normal (--no-realtime)"
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        await _sleep_until(t0_ns)
        helpers.append(asyncio.create_task(_lag_probe(stats)))  # the load's loop, not the wait for t0
        if lags is not None:
            del lags[:]  # the warm-up's reads are not the load's
            if plan.on_lags is not None:
                helpers.append(asyncio.create_task(_spill_lags(lags, plan.on_lags)))
        cpu0 = process_time_ns()
        if plan.offsets_ns is None:
            await _closed_loop(transport, plan, stats, end_release)
        else:
            await _open_loop(transport, plan, stats, t0_ns, end_release, tasks)
            if tasks:
                await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        await _cancel_all(tasks)
        raise
    finally:
        if cpu0:
            stats.cpu_ns += process_time_ns() - cpu0
            if lags is not None:
                stats.read_lag_ns.extend(lags)
        if gc_was_enabled:
            gc.enable()
        if realtime:
            realtime_off()
        for h in helpers:
            h.cancel()
        if progress is not None:
            progress(stats.done, n)
    return stats


async def _closed_loop(transport, plan: LoadPlan, stats: LoadStats, end_release: int | None) -> None:
    n, it, done = len(plan.records), iter(range(len(plan.records))), plan.on_done

    async def slot() -> None:
        for i in it:  # a shared iterator: each free slot takes the next request
            now = perf_counter_ns()
            if end_release is not None and now >= end_release:
                return
            rec = plan.records[i]
            rec.scheduled_ns = rec.slot_ns = now
            stats.released += 1
            await transport.send(plan.wires[i], rec)
            stats.done += 1
            if done is not None:
                done(rec)

    slots = [asyncio.create_task(slot()) for _ in range(min(plan.concurrency or n, n))]
    try:
        await asyncio.gather(*slots)
    except asyncio.CancelledError:
        await _cancel_all(slots)
        raise


async def _cancel_all(tasks: list[asyncio.Task]) -> None:
    """Ctrl-C: every request in flight is cancelled and awaited, so each records its end."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _open_loop(transport, plan: LoadPlan, stats: LoadStats, t0_ns: int, end_release: int | None, tasks: list) -> None:
    sem = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None
    done = plan.on_done

    async def one(i: int) -> None:
        rec = plan.records[i]
        if sem is None:  # nothing to wait for: any delay to the write is dispatch lag
            rec.slot_ns = rec.scheduled_ns
            await transport.send(plan.wires[i], rec)
        else:
            async with sem:
                rec.slot_ns = perf_counter_ns()
                await transport.send(plan.wires[i], rec)
        stats.done += 1
        if done is not None:
            done(rec)

    for i, off in enumerate(plan.offsets_ns):  # type: ignore[arg-type]
        target = t0_ns + off
        if end_release is not None and target >= end_release:
            break
        await _sleep_until(target)
        plan.records[i].scheduled_ns = target
        stats.released += 1
        tasks.append(asyncio.create_task(one(i)))


def new_loop() -> asyncio.AbstractEventLoop:
    """asyncio's own loop where reads carry kernel stamps (transport/stamped.py): under uvloop
    those raw sockets lost reads after a server reset connections (a closed loop then hung
    until the request timeout; tests/unit/test_faults_cli.py). uvloop elsewhere: several times
    less CPU per read. SERVEBENCH_UVLOOP=1 forces uvloop."""
    import os

    from servebench.transport.stamped import SO_TIMESTAMPNS

    if SO_TIMESTAMPNS is not None and os.environ.get("SERVEBENCH_UVLOOP") != "1":
        return asyncio.new_event_loop()
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
