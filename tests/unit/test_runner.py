"""The load loop with a fake transport on the real clock: release policy, slots, Ctrl-C."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

import pytest

from servebench.config import LoadConfig
from servebench.records import RequestRecord
from servebench.load.loop import LoadPlan, drive
from servebench.load.schedule import release_offsets_ns


class FakeTransport:
    """Each request takes `service_s`; tracks how many are in flight."""

    def __init__(self, service_s: float = 0.02):
        self.service_s = service_s
        self.level = 0
        self.peak = 0
        self.levels: list[int] = []

    async def send(self, wire, rec: RequestRecord) -> None:
        rec.sent_ns = perf_counter_ns()
        self.level += 1
        self.peak = max(self.peak, self.level)
        self.levels.append(self.level)
        await asyncio.sleep(self.service_s)
        rec.status, rec.end_ns = 200, perf_counter_ns()
        self.level -= 1


def plan(n, offsets, concurrency=None, duration_ns=None):
    return LoadPlan([b""] * n, [RequestRecord(index=i) for i in range(n)], offsets, concurrency, duration_ns)


def test_burst_releases_every_request_at_t0_before_any_completes():
    tr, p = FakeTransport(0.05), plan(200, [0] * 200)
    t0 = perf_counter_ns() + 5_000_000
    stats = asyncio.run(drive(tr, p, t0))
    assert stats.released == stats.done == 200
    assert all(r.scheduled_ns == t0 for r in p.records)
    assert tr.peak == 200  # all in flight at once
    assert max(r.sent_ns for r in p.records) < min(r.end_ns for r in p.records)
    assert min(r.sent_ns for r in p.records) >= t0


@pytest.mark.parametrize("c", [1, 4, 16])
def test_concurrency_never_exceeds_and_keeps_slots_busy(c):
    n = c * 10
    tr, p = FakeTransport(0.01), plan(n, None, concurrency=c)
    asyncio.run(drive(tr, p, perf_counter_ns()))
    assert tr.peak == c
    assert all(r.ok for r in p.records)
    # keeps C busy: the next request of a slot goes out right after the previous ends
    busy = sum(r.end_ns - r.sent_ns for r in p.records)
    span = max(r.end_ns for r in p.records) - min(r.sent_ns for r in p.records)
    assert busy / span > 0.9 * c
    assert all(r.slot_ns == r.scheduled_ns for r in p.records)


def test_rate_releases_on_schedule_and_cap_records_slot_wait():
    load = LoadConfig(requests=40, rate=200.0, arrival="constant", concurrency=2)
    offs = release_offsets_ns(load, 40)
    tr, p = FakeTransport(0.02), plan(40, offs, concurrency=2)
    t0 = perf_counter_ns() + 2_000_000
    asyncio.run(drive(tr, p, t0))
    assert [r.scheduled_ns - t0 for r in p.records] == offs
    assert tr.peak == 2
    waits = [r.slot_ns - r.scheduled_ns for r in p.records]
    assert max(waits) > 20_000_000  # 200/s offered to 2 slots of 20 ms: a queue builds
    assert all(r.sent_ns >= r.slot_ns >= r.scheduled_ns for r in p.records)


def test_duration_stops_releases():
    offs = [i * 10_000_000 for i in range(100)]  # 100/s for 1 s
    tr, p = FakeTransport(0.001), plan(100, offs, duration_ns=200_000_000)
    stats = asyncio.run(drive(tr, p, perf_counter_ns()))
    assert stats.released == 20
    assert sum(1 for r in p.records if r.sent_ns) == 20


def test_cancel_keeps_what_was_measured():
    tr, p = FakeTransport(0.05), plan(50, None, concurrency=5)

    async def go():
        task = asyncio.create_task(drive(tr, p, perf_counter_ns()))
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    done = [r for r in p.records if r.ok]
    assert 5 <= len(done) < 50  # measured records survive in the caller's list


def test_poisson_offsets_are_seeded_and_have_the_right_mean():
    load = LoadConfig(requests=2000, rate=50.0, seed=3)
    a, b = release_offsets_ns(load, 2000), release_offsets_ns(load, 2000)
    assert a == b and a[0] == 0 and a == sorted(a)
    mean_gap = (a[-1] - a[0]) / 1999 / 1e9
    assert abs(mean_gap - 0.02) < 0.002
    assert release_offsets_ns(LoadConfig(requests=5, seed=4, rate=50.0), 5) != a[:5]
    assert release_offsets_ns(LoadConfig(requests=3), 3) == [0, 0, 0]
    assert release_offsets_ns(LoadConfig(requests=3, concurrency=2), 3) is None


def test_load_loop_runs_realtime_when_permitted_and_restores_policy():
    import os

    seen = []

    class Probe(FakeTransport):
        async def send(self, wire, rec):
            seen.append(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)
            await super().send(wire, rec)

    p = plan(3, [0, 0, 0])
    stats = asyncio.run(drive(Probe(0.001), p, perf_counter_ns()))
    if stats.scheduling == "SCHED_RR":  # root or CAP_SYS_NICE (CI runs as root)
        assert set(seen) == {os.SCHED_RR}
    else:
        assert stats.scheduling.startswith("normal") and set(seen) == {os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # restored: decoding and reports run normally
    p = plan(2, [0, 0])
    seen.clear()
    stats = asyncio.run(drive(Probe(0.001), p, perf_counter_ns(), realtime=False))
    assert set(seen) == {os.SCHED_OTHER} and stats.scheduling.startswith("normal")


def test_loop_lag_is_sampled_during_the_load_not_while_waiting_for_t0():
    # ray actors wait 500 ms for a t0 agreed across hosts: an idle loop's samples would dilute
    # the load's percentiles (~10 of them at one per 50 ms)
    tr, p = FakeTransport(0.01), plan(1, [0])
    t0 = perf_counter_ns() + 500_000_000
    stats = asyncio.run(drive(tr, p, t0))
    load_ms = (p.records[0].end_ns - t0) / 1e6  # however slow the host: at most one sample a 50 ms of it
    assert stats.done == 1 and len(stats.loop_lag_ns) <= load_ms / 50 + 1
