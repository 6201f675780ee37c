"""--workers ray:N, the parts that need no cluster: the clock arithmetic, the actor driven
directly (a plain object) against the emulator, the collector losing a worker, the option.
The cluster itself: tests/integration/test_ray_sweep.py."""

from __future__ import annotations

import time
from time import perf_counter_ns

import pytest
from click.testing import CliRunner

from servebench.cli import main
from servebench.emulator import start_emulator
from servebench.load.ray_workers import LoadActor, _loopback, best_offset, shift_records
from servebench.records import RequestRecord, token_arrays
from servebench.load.loop import LoadStats
from servebench.load.split import SplitLoad, jobs
from servebench.load.workers import WorkerError, collect
from tests.unit.test_accuracy_workers import wires

MS = 1_000_000


def test_shift_moves_every_stamp_and_nothing_else():
    r = RequestRecord(index=0, scheduled_ns=100, slot_ns=110, connect_ns=7, sent_ns=120, first_byte_ns=150,
                      end_ns=300, token_ns=[200, 250], chunks=[(160, b"a"), (260, b"b")])
    unsent = RequestRecord(index=1)
    shift_records([r, unsent], -50)
    assert (r.scheduled_ns, r.slot_ns, r.sent_ns, r.first_byte_ns, r.end_ns) == (50, 60, 70, 100, 250)
    assert list(r.token_ns) == [150, 200] and r.chunks == [(110, b"a"), (210, b"b")]
    assert r.connect_ns == 7  # a duration
    assert (unsent.sent_ns, unsent.end_ns, unsent.scheduled_ns) == (0, 0, 0)  # unset stays unset


@pytest.mark.parametrize("skew_ms", [0.0, 3.7, -250.0])
def test_offset_from_the_shortest_round_trip_is_within_its_bound(skew_ms):
    skew = int(skew_ms * MS)
    # (outbound, return) delays of each exchange, ns: asymmetric, one slow
    delays = [(900_000, 100_000), (40_000, 60_000), (5_000_000, 4_000_000), (300_000, 20_000)]
    ex, t = [], 1_000_000_000
    for out, back in delays:
        ex.append((t, t + out + skew, t + out + back))
        t += 10 * MS
    offset, unc = best_offset(ex)
    assert unc == 50_000  # the (40 us, 60 us) exchange: half its 100 us round trip
    assert abs(offset - skew) <= unc


def test_loopback_endpoints_are_recognised():
    assert _loopback("http://127.0.0.1:8000") and _loopback("http://localhost:80") and _loopback("http://[::1]:9")
    assert not _loopback("http://10.0.0.5:8000") and not _loopback("http://inference.internal:8000")


def test_actor_runs_its_share_from_a_wall_clock_t0_and_returns_driver_clock_stamps(tmp_path):
    """The actor object without Ray: its t0 comes as a wall-clock instant, its records come
    back on the driver's monotonic clock. The driver's clock is made to read 7 s ahead of
    this host's, so the shift shows: each send stamp must sit just before the emulator's own
    arrival stamp (this host's clock) plus those 7 s."""
    n, ahead = 8, 7_000 * MS
    with start_emulator("openai", 5, 2, log=tmp_path / "e.jsonl") as h:
        recs = [RequestRecord(index=i) for i in range(n)]
        parts = [(list(range(n)), None, 2)]
        job = jobs(SplitLoad(h.url, "http", wires(h.url, n), recs, None, 2, None, 1, timeout_s=30.0,
                             adapter="openai-completions"), parts)[0]
        actor = LoadActor()
        actor.start(job)
        msgs = _until(actor, "ready")
        driver_t0 = perf_counter_ns() + 100 * MS + ahead
        actor.tell(("t0", driver_t0, time.time_ns() + 100 * MS))
        msgs = _until(actor, "done")
        h.stop()
        log = {int(r["id"]): r for r in h.records()}
    got = _returned(msgs)
    assert len(got) == n and all(r.ok and r.decoded and r.chunks == [] for r in got)
    assert all(len(r.token_ns) == 4 for r in got)  # decoded in the actor: 4 tokens by default
    # the agreed instant, converted there and back: the first slots were scheduled at it
    assert abs(min(r.scheduled_ns for r in got) - driver_t0) < 2 * MS
    for r in got:
        assert r.sent_ns >= r.scheduled_ns and r.first_byte_ns > r.sent_ns
        assert -2 * MS < log[r.index]["arrival_ns"] + ahead - r.sent_ns < 200 * MS


def _spooling_actor(url: str, n: int, run_dir, token: str, ahead_ns: int) -> tuple[list, int]:
    """One actor driving n requests with a spool in run_dir (token: what the driver marked it
    with); the driver's clock reads ahead_ns ahead of this host's. (messages, driver t0)"""
    recs = [RequestRecord(index=i) for i in range(n)]
    load = SplitLoad(url, "http", wires(url, n), recs, None, 2, None, 1, timeout_s=30.0, adapter="openai-completions",
                     spool_dir=run_dir, spool_token=token)
    job = jobs(load, [(list(range(n)), None, 2)])[0]
    actor = LoadActor()
    actor.start(job)
    _until(actor, "ready")
    driver_t0 = perf_counter_ns() + 100 * MS + ahead_ns
    actor.tell(("t0", driver_t0, time.time_ns() + 100 * MS))
    return _until(actor, "done"), driver_t0


def test_an_actor_that_sees_the_run_dir_spools_there_on_the_drivers_clock(tmp_path, monkeypatch):
    """The driver's token read back: the actor's spool is in the run dir, where a killed run's
    records are found; salvaged from it they carry the driver's clock, as the records the
    actor sends back do."""
    from servebench.load import spooled
    from servebench.store import spool

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    token = spooled.mark(run_dir)
    with start_emulator("openai", 5, 2) as h:
        msgs, _ = _spooling_actor(h.url, 8, run_dir, token, 7_000 * MS)
    got = {r.index: r for r in _returned(msgs)}
    assert all(r.ok and r.decoded and r.chunks == [] and len(r.token_ns) == 4 for r in got.values())
    path = run_dir / "requests.spool.w0.arrow"
    _, rows = spool.records(path)
    salvaged = {r.index: r for r in rows}
    assert sorted(salvaged) == sorted(got)  # every record on disk, in the run dir
    for i, r in salvaged.items():
        g = got[i]
        assert (r.sent_ns, r.first_byte_ns, r.end_ns, r.scheduled_ns) == (g.sent_ns, g.first_byte_ns, g.end_ns,
                                                                          g.scheduled_ns)
        assert r.chunks[0][0] >= g.first_byte_ns and r.chunks[-1][0] <= g.end_ns  # the reads: shifted too


def test_a_spooled_actor_spills_its_arrays_and_sends_them_back_in_batches(tmp_path, monkeypatch):
    """Sent whole in "done", a long run's records put every token stamp of a worker in one
    message (issue 20). The worker's decoded arrays go to disk as they are decoded (the
    records it keeps hold TokenStats), and come back a batch of at most BATCH_EVENTS events
    (plus the record that crosses it) at a time, each record whole."""
    from servebench.load import loop, split, spooled

    monkeypatch.setattr(split, "BATCH_EVENTS", 250)
    monkeypatch.setattr(loop, "SPILL_LAGS_AT", 1)  # every 0.25 s the lags so far go to the spool
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    token = spooled.mark(run_dir)
    n = 8
    recs = [RequestRecord(index=i) for i in range(n)]
    with start_emulator("openai", 5, 2) as h:
        load = SplitLoad(h.url, "http", wires(h.url, n, tokens=100), recs, None, 2, None, 1, timeout_s=30.0,
                         adapter="openai-completions", spool_dir=run_dir, spool_token=token)
        actor = LoadActor()
        actor.start(jobs(load, [(list(range(n)), None, 2)])[0])
        _until(actor, "ready")
        actor.tell(("t0", perf_counter_ns() + 100 * MS, time.time_ns() + 100 * MS))
        msgs = _until(actor, "done")
    sizes = [sum(len(r.token_ns) for r in m[2]) for m in msgs if m[0] == "records"]
    assert sizes == [300, 300, 200]  # 100 tokens a request: the third crosses 250
    got = _returned(msgs)
    assert [r.index for r in got] == list(range(n))
    assert all(r.ok and r.decoded and r.tok is None and len(r.token_ns) == len(r.token_counts) == 100 for r in got)
    # the worker's own records (these objects: the actor runs in this process) kept scalars only
    assert all(r.tok is not None and r.tok.src is not None and len(r.token_ns) == 0 for r in recs)
    for g, r in zip(got, recs):  # the copies sent: the same stamps, moved onto the driver's clock
        delta = g.sent_ns - r.sent_ns
        assert [t - delta for t in g.token_ns] == list(token_arrays(r)[0])
    # the read lags it spooled stayed in the run dir for the driver to read a block at a time;
    # only those still held at the end (the last 0.25 s) went back with "done"
    sent = next(m for m in msgs if m[0] == "done")[2].read_lag_ns
    count, _ = spooled.lag_blocks(spooled.found(run_dir), sent)
    assert count > len(sent)


def test_an_actor_on_another_node_spools_to_its_own_disk_and_clears_it(tmp_path, monkeypatch):
    """No token in the run dir (the actor's node does not see it): the spool goes to a scratch
    dir on the actor's node, holds every record while the load runs, and is gone after."""
    import tempfile

    from servebench.load import spooled

    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(node_tmp))
    from servebench.load import ray_workers

    made, events = [], []
    real, real_warm, real_send = spooled.start, spooled.warm, ray_workers._QueueConn.send
    monkeypatch.setattr(spooled, "start",
                        lambda *a, **k: events.append("spool") or made.append(real(*a, **k)) or made[-1])
    monkeypatch.setattr(spooled, "warm", lambda: events.append("warm") or real_warm())
    monkeypatch.setattr(ray_workers._QueueConn, "send", lambda self, m: events.append(m[0]) or real_send(self, m))
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # seen by the driver only: no token here
    with start_emulator("openai", 5, 2) as h:
        msgs, _ = _spooling_actor(h.url, 8, run_dir, "not-this-node", 0)
    got = _returned(msgs)
    assert len(got) == 8 and all(r.ok and r.decoded and r.chunks == [] and len(r.token_ns) == 4 for r in got)
    assert len(made) == 1 and made[0].written == 8 and made[0].path.parent.parent == node_tmp
    # pyarrow's one-off set-up (~0.2-0.6 s) before the worker says ready, not after t0
    assert [e for e in events if e in ("warm", "ready", "spool")] == ["warm", "ready", "spool"]
    assert list(run_dir.iterdir()) == []
    deadline = time.monotonic() + 10
    while list(node_tmp.glob("servebench-spool-*")) and time.monotonic() < deadline:  # once the worker's thread ends
        time.sleep(0.05)
    assert list(node_tmp.glob("servebench-spool-*")) == []


def _returned(msgs: list) -> list[RequestRecord]:
    """The records an actor sent back, in batches before its "done", in their order."""
    assert [m[0] for m in msgs if m[0] in ("records", "done")][-1] == "done"
    out = []
    for m in msgs:
        if m[0] == "records":
            assert m[1] == len(out)  # each batch says where it starts
            out += m[2]
    return out


def _until(actor: LoadActor, kind: str, timeout_s: float = 30.0) -> list:
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen += actor.poll(0.1)
        if any(m[0] == kind for m in seen):
            return seen
    raise AssertionError(f"no {kind!r} from the actor in {timeout_s} s: {seen}")


class _Fake:
    """A worker that answers ready, then either finishes its share or dies."""

    def __init__(self, records: list[RequestRecord], dies: bool) -> None:
        self.out = [("ready",)]
        self.records, self.dies, self.dead = records, dies, None

    def send(self, msg) -> None:
        if msg[0] == "t0":
            if self.dies:
                self.dead = "load actor on node-b: node lost"
            else:
                for r in self.records:
                    r.sent_ns, r.end_ns, r.status = msg[1], msg[1] + 5, 200
                self.out.append(("done", self.records, LoadStats(released=len(self.records), done=len(self.records)), []))

    def recv(self):
        if self.out:
            return self.out.pop(0)
        raise EOFError

    def poll(self) -> bool:
        return bool(self.out)

    def gone(self) -> str | None:
        return None if self.out else self.dead


def test_a_worker_lost_after_t0_fails_its_requests_and_keeps_the_others():
    recs = [RequestRecord(index=i) for i in range(6)]
    parts = [([0, 2, 4], None, 1), ([1, 3, 5], None, 1)]
    chans = [_Fake([RequestRecord(index=i) for i in (0, 2, 4)], False), _Fake([], True)]
    with pytest.raises(WorkerError, match="node lost"):
        collect(chans, SplitLoad("", "http", [], recs, None, None, None, 2), parts,
                wait_fn=lambda cs, t: [c for c in cs if c.out or c.dead])
    assert [r.ok for r in recs] == [True, False] * 3
    assert all(recs[i].error == "lost with its load worker: load actor on node-b: node lost" for i in (1, 3, 5))


@pytest.mark.parametrize("value", ["ray:0", "ray:x", "ray", "0", "two"])
def test_bad_workers_value_is_one_line(value, tmp_path):
    r = CliRunner().invoke(main, ["run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--workers", value,
                                  "--results-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert f"error: invalid option load.workers: {value!r}: expected a number of load processes" in r.output
    assert "ray:N" in r.output
