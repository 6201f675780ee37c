"""One load plan driven by several load generators: `--workers N` processes (workers.py) or
`--workers ray:N` actors (ray_workers.py). SplitLoad is what a run hands either of them; each
generator gets its share as a job (schedule.split_plan: concurrency divided as evenly as
possible, requests dealt in proportion to each share, with their global release offsets)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from servebench.load.loop import LoadStats
from servebench.load.schedule import split_plan
from servebench.records import RequestRecord, token_arrays

# A worker's records go back a batch at a time ("records", first position, batch), then "done":
# sent whole, the parent unpickled every token stamp of a long run at once (issue 20).
BATCH_EVENTS = 1 << 18  # token events a batch carries (~3 MB of stamps and counts)
BATCH_RECORDS = 4096

Part = tuple[list[int], list[int] | None, int | None]  # (indices, offsets or None, concurrency or None)


@dataclass(slots=True)
class SplitLoad:
    base_url: str
    kind: str  # the transport: transport_class(kind)
    wires: list[Any]  # prepared requests, one per record
    records: list[RequestRecord]  # records[i] is replaced by the worker's filled copy
    offsets_ns: list[int] | None  # release offsets from t0; None: closed loop
    concurrency: int | None
    duration_ns: int | None  # no releases after t0 + duration
    workers: int
    _: KW_ONLY
    connections: int | None = None  # opened before t0 in total (default: the concurrency, or one per request)
    timeout_s: float = 600.0
    # a key of ADAPTERS: each worker decodes its records after the load and sends them back
    # without the raw bytes, so decoding runs in parallel and the pipes carry little
    adapter: str | None = None
    # -- what comes back: every worker's stats pooled (cpu_ns: the sum of their load-loop
    # CPU), the set-up time of every connection they opened, progress while it runs
    stats: LoadStats = field(default_factory=LoadStats)
    connect_ns: list[int] | None = None
    progress: Callable[[int, int], None] | None = None
    on_t0: Callable[[], None] | None = None  # runs once t0 is sent
    actors: list[dict] | None = None  # ray:N: one row per actor (node, share, clock offset)
    # each worker spools its finished records here (store/spool.py); None: kept in memory
    # (a Ray actor that does not see this dir spools on its own node: spooled.place)
    spool_dir: Any = None
    spool_token: str | None = None  # ray:N: in spool_dir/requests.spool.id, where an actor that sees the dir finds it
    # the parent's hands for each batch as it arrives (a spooled run: its token arrays to disk)
    on_records: Callable[[list[RequestRecord]], None] | None = None

    def parts(self) -> list[Part]:
        return split_plan(list(range(len(self.records))), self.offsets_ns, self.concurrency, self.workers)


def jobs(load: SplitLoad, parts: list[Part]) -> list[dict]:
    """What each worker is sent: its share of the plan and how many connections to open."""
    total_conns = load.connections or load.concurrency or len(load.records)
    return [dict(base_url=load.base_url, kind=load.kind, timeout_s=load.timeout_s, adapter=load.adapter,
                 wires=[load.wires[i] for i in idx], records=[load.records[i] for i in idx], offsets=offs,
                 concurrency=conc, duration_ns=load.duration_ns,
                 connections=max(1, min(len(idx), conc or len(idx), -(-total_conns // len(parts)))),
                 spool=str(Path(load.spool_dir).resolve() / f"requests.spool.w{k}.arrow") if load.spool_dir else None,
                 spool_token=load.spool_token, keep_lags=load.spool_dir is not None)
            for k, (idx, offs, conc) in enumerate(parts)]


def batches(records: list[RequestRecord]) -> Iterator[tuple[int, list[RequestRecord]]]:
    """(first position, records) in batches of at most BATCH_EVENTS token events (or one
    record) and BATCH_RECORDS records; a record whose arrays are on disk (spooled.decode_all's
    spill) goes as a copy holding them again, so only one batch's arrays are in memory."""
    start = 0
    while start < len(records):
        end, events = start, 0
        while end < len(records) and end - start < BATCH_RECORDS and (end == start or events < BATCH_EVENTS):
            r = records[end]
            events += r.tok.events if r.tok is not None else len(r.token_ns)
            end += 1
        yield start, [_portable(r) for r in records[start:end]]
        start = end


def _portable(r: RequestRecord) -> RequestRecord:
    if r.tok is None or r.tok.src is None:
        return r
    ns, counts = token_arrays(r)
    return replace(r, token_ns=ns, token_counts=counts, tok=None)
