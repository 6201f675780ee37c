"""`--workers ray:N`: one load spread over N load-generator actors on the hosts of a Ray cluster,
for a fleet behind one endpoint that takes more streams than one host's client can hold.

It is `--workers N` (workers.py) with the processes replaced by Ray actors: the same plan split,
the same worker loop (run in a thread of the actor), the same collector. What changes is the
clock. Each actor times its own requests on its own monotonic clock, so every duration (TTFT,
ITL, e2e) stays as exact as with one process. The shared start is agreed by wall clock: before
the load the driver reads each actor's wall clock SAMPLES times and keeps the exchange with the
shortest round trip (offset = actor's wall clock minus the driver's at the round trip's middle;
its uncertainty is half that round trip, NTP's bound). The driver picks t0 on its own clock and
sends it to each actor in that actor's wall clock; the actor turns it into its monotonic clock.
Records come back shifted onto the driver's monotonic clock by (driver t0 - actor t0), so what
spans actors (the run's window, throughput) is exact to within the recorded uncertainty;
summary.json `client.split` keeps, per actor, its node, share of the load, offset and
uncertainty.

Where the cluster is: RAY_ADDRESS (Ray's own variable), else a new local Ray.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable
from urllib.parse import urlsplit

from servebench.errors import first_line
from servebench.records import RequestRecord, ns_array
from servebench.load import spooled
from servebench.load.loop import LoadStats
from servebench.load.split import Part, SplitLoad, jobs
from servebench.load.workers import WorkerError, collect
from servebench.signals import shielded

SAMPLES = 7  # clock exchanges per actor; the shortest round trip is kept
START_MARGIN_NS = 500_000_000  # t0 this far ahead: one Ray call to every actor must land first
READY_S = 300.0  # actors start Python and open their connections; slow on a busy cluster
_STAMPS = ("scheduled_ns", "slot_ns", "sent_ns", "first_byte_ns", "end_ns")


def shift_records(records: list[RequestRecord], delta_ns: int) -> None:
    """Move every time stamp (not durations, not unset zeros) by delta_ns."""
    for r in records:
        for f in _STAMPS:
            if v := getattr(r, f):
                setattr(r, f, v + delta_ns)
        r.token_ns = ns_array(t + delta_ns for t in r.token_ns)
        r.chunks = [(t + delta_ns, b) for t, b in r.chunks]


def best_offset(exchanges: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(offset_ns, uncertainty_ns) from (driver send, actor wall, driver receive) exchanges: the
    one with the shortest round trip, whose middle is closest to when the actor read its clock."""
    a, w, b = min(exchanges, key=lambda e: e[2] - e[0])
    return w - (a + b) // 2, (b - a + 1) // 2


class _QueueConn:
    """What the worker loop expects of its pipe, as two queues inside the actor."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()

    def send(self, msg) -> None:
        self.outbox.put(msg)

    def recv(self):
        return self.inbox.get()

    def close(self) -> None:
        pass


class LoadActor:
    """One load generator on one node: runs workers._worker_main in a thread, converts the
    driver's t0 into its own clock and shifts its records back onto the driver's."""

    def __init__(self) -> None:
        self.conn = _QueueConn()
        self.shift = 0

    def facts(self) -> dict[str, Any]:
        from servebench.load.rayconnect import node_facts

        return {**node_facts(), "cpus": os.cpu_count()}

    def clock(self) -> int:
        return time.time_ns()

    def start(self, job: dict) -> None:
        from servebench.load.workers import _worker_main

        job, scratch = spooled.place(job)

        def body() -> None:
            try:
                _worker_main(self.conn, job, False)
            finally:  # a spool on this node's own disk: the records went back decoded
                spooled.discard(scratch)

        threading.Thread(target=body, daemon=True).start()

    def tell(self, msg: tuple) -> None:
        if msg[0] == "t0":
            driver_t0, my_wall_t0 = msg[1], msg[2]
            mine = perf_counter_ns() + (my_wall_t0 - time.time_ns())
            self.shift = driver_t0 - mine
            msg = ("t0", mine, self.shift)
        self.conn.inbox.put(msg)

    def poll(self, timeout_s: float) -> list:
        out = []
        try:
            out.append(self.conn.outbox.get(timeout=timeout_s))
            while True:
                out.append(self.conn.outbox.get_nowait())
        except queue.Empty:
            pass
        for m in out:
            if m[0] == "done":
                shift_records(m[1], self.shift)
            elif m[0] == "records":
                shift_records(m[2], self.shift)
        return out


class ActorChannel:
    """The driver's side of one actor, as workers.collect talks to a worker."""

    def __init__(self, actor, offset_ns: int, node: str) -> None:
        self.actor, self.offset_ns, self.node = actor, offset_ns, node
        self.buf: deque = deque()
        self.pending = None  # the outstanding poll() call
        self.dead: str | None = None

    def send(self, msg) -> None:
        if msg[0] == "t0":  # the driver's monotonic t0, as this actor's wall clock reads that instant
            wall = time.time_ns() + (msg[1] - perf_counter_ns())
            msg = ("t0", msg[1], wall + self.offset_ns)
        self.actor.tell.remote(msg)

    def recv(self):
        if self.buf:
            return self.buf.popleft()
        raise EOFError

    def poll(self) -> bool:
        return bool(self.buf)

    def gone(self) -> str | None:
        return None if self.buf else self.dead


def wait_actors(ray) -> Callable[[list, float], list]:
    def wait_fn(chans: list[ActorChannel], timeout_s: float) -> list[ActorChannel]:
        for c in chans:
            if c.pending is None and c.dead is None:
                c.pending = c.actor.poll.remote(0.2)
        by_ref = {c.pending: c for c in chans if c.pending is not None}
        if by_ref and not any(c.buf for c in chans):
            ray.wait(list(by_ref), num_returns=1, timeout=timeout_s)
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        for ref in ready:
            c = by_ref[ref]
            # the actor's outbox was dequeued by this poll: a Ctrl-C between taking the answer
            # and keeping it would drop its messages ("done" among them), so it is held till after
            with shielded():
                try:
                    c.buf.extend(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - ActorDiedError, node lost: the worker is gone
                    c.dead = f"load actor on {c.node}: {first_line(e)}"
                c.pending = None
        return [c for c in chans if c.buf or c.dead]

    return wait_fn


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_split_ray(load: SplitLoad) -> LoadStats:
    """workers.run_split over `load.workers` Ray actors spread across the cluster's nodes.
    `load.actors` gets one row per actor: node, requests, concurrency, clock offset and its
    uncertainty."""
    if load.kind != "http":
        raise WorkerError(f"--workers ray:N drives HTTP endpoints only, not {load.kind}")
    from servebench.load.rayconnect import RayConnectError, connect

    try:
        ray = connect(os.environ.get("RAY_ADDRESS"))
    except RayConnectError as e:
        raise WorkerError(str(e)) from None
    parts = load.parts()
    if load.spool_dir is not None:
        load.spool_token = spooled.mark(load.spool_dir) or "-"  # unmarked: every actor spools on its own node
    actor_cls = ray.remote(LoadActor).options(num_cpus=1, max_concurrency=4, scheduling_strategy="SPREAD")
    actors = [actor_cls.remote() for _ in parts]
    try:
        chans, rows = _channels(ray, actors, parts, load.base_url)
        if load.actors is not None:
            load.actors.extend(rows)
        for actor, job in zip(actors, jobs(load, parts)):
            actor.start.remote(job)
        collect(chans, load, parts, wait_fn=wait_actors(ray), start_margin_ns=START_MARGIN_NS, ready_s=READY_S)
    finally:
        for a in actors:
            ray.kill(a)
        ray.shutdown()
        if load.spool_dir is not None:
            spooled.remove([Path(load.spool_dir) / spooled.MARK])
    return load.stats


def _channels(ray, actors: list, parts: list[Part], base_url: str) -> tuple[list[ActorChannel], list[dict]]:
    """Each actor's channel, its clock agreed with ours; and its row for summary.json client.split."""
    facts = _get(ray, [a.facts.remote() for a in actors], READY_S, "load actors did not start")
    me = ray.util.get_node_ip_address()
    if _loopback(base_url) and (away := [f["label"] for f in facts if f["ip"] != me]):
        raise WorkerError(f"the endpoint {base_url} is this host's loopback; load actors on {', '.join(away)} "
                          "cannot reach it (give an address every node can reach)")
    chans, rows = [], []
    for actor, f, (idx, _, conc) in zip(actors, facts, parts):
        offset, unc = best_offset([_exchange(ray, actor) for _ in range(SAMPLES)])
        chans.append(ActorChannel(actor, offset, f["label"]))
        rows.append({"node": f["label"], "node_id": f["id"], "ip": f["ip"], "cpus": f["cpus"],
                     "requests": len(idx), "concurrency": conc,
                     "clock_offset_ms": offset / 1e6, "clock_uncertainty_ms": unc / 1e6})
    return chans, rows


def _exchange(ray, actor) -> tuple[int, int, int]:
    a = time.time_ns()
    w = ray.get(actor.clock.remote())
    return a, w, time.time_ns()


def _get(ray, refs: list, timeout_s: float, what: str) -> list:
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise WorkerError(f"{what} within {timeout_s:.0f} s (does the cluster have {len(refs)} free CPUs?)") from None
    except ray.exceptions.RayError as e:
        raise WorkerError(f"{what}: {first_line(e)}") from None
