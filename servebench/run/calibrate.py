"""How right is the load generator? Measured against the emulator's own log.

The emulator logs when each request fully arrived and when each token was written
(perf_counter_ns, CLOCK_MONOTONIC: the same clock as the client's stamps on one Linux host).
The client's error on a request is then exact, not estimated:

    TTFT error = client TTFT - emulator TTFT
               = (arrival - sent_ns)                  send lag: stamped too early
               + (client first-token read - write)    receive lag: read too late
    e2e error  = (end_ns - sent_ns) - (last write - arrival)
    ITL error  = client gap j - emulator gap j

A client that stamps before opening its connection or serializing the request shows it as send
lag. `compare` computes these; `measure_floor` runs a short self-check (the client's TTFT
overhead and CPU per streamed token) and `load_warning` says when a requested load is beyond it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Sequence

from servebench.analysis.metrics import dist, e2e_ns, itl_gaps_ns, ttft_ns
from servebench.records import RequestRecord

MS = 1e6
DEFAULT_STREAMS_THRESHOLD = 100  # loads above this many streams get the self-check by default
CPU_BUDGET = 0.5  # share of a core a worker may spend ingesting before reads queue behind each other
# The emulator's arrival is the kernel's receive stamp (CLOCK_REALTIME, converted): it lands a
# few microseconds either side of the client's own stamp. Causality is judged beyond that.
CLOCK_SLACK_MS = 0.05
API = "openai-completions"  # the emulator's format for every self-check request


def compare(records: Sequence[RequestRecord], emu_records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Errors of servebench's decoded records against the emulator log, matched on
    X-Request-Id == record index. Warm-up and failed requests are left out."""
    by_id = {r["id"]: r for r in emu_records}
    ttft, e2e, itl, send, recv, first, last = [], [], [], [], [], [], []
    matched = unmatched = violations = 0
    for rec in records:
        if rec.warmup or not rec.ok or not rec.token_ns:
            continue
        e = by_id.get(str(rec.index))
        if e is None or e["outcome"] != "ok" or not e["token_ns"]:
            unmatched += 1
            continue
        matched += 1
        w = e["token_ns"]
        ttft.append((ttft_ns(rec) - (w[0] - e["arrival_ns"])) / MS)
        e2e.append((e2e_ns(rec) - (e["end_ns"] - e["arrival_ns"])) / MS)
        send.append((e["arrival_ns"] - rec.sent_ns) / MS)
        if all(c == 1 for c in rec.token_counts) and len(rec.token_ns) == len(w):
            got = rec.token_ns
            lags = [(a - b) / MS for a, b in zip(got, w)]
            recv.extend(lags)
            itl.extend((g - (b - a)) / MS for g, a, b in zip(itl_gaps_ns(rec), w, w[1:]))
            bad = min(lags) < -CLOCK_SLACK_MS
        else:
            recv.append((rec.token_ns[0] - w[0]) / MS)
            bad = recv[-1] < -CLOCK_SLACK_MS
            lags = [recv[-1], (rec.token_ns[-1] - w[-1]) / MS]
        first.append(lags[0])
        last.append(lags[-1])
        # a stamp before the cause (sent after arrival, read before write) means the clocks or
        # the matching are wrong, and every number above with them
        violations += bad or send[-1] < -CLOCK_SLACK_MS
    return {
        "matched": matched, "unmatched": unmatched, "causality_violations": violations,
        "ttft_err_ms": dist(ttft), "e2e_err_ms": dist(e2e), "itl_err_ms": dist(itl),
        "send_lag_ms": dist(send), "recv_lag_ms": dist(recv),
        "recv_first_ms": dist(first), "recv_last_ms": dist(last),  # read lag of first / last tokens
    }


async def drive_http(url: str, records: list[RequestRecord], bodies: list, *, offsets_ns: list[int] | None,
                     concurrency: int | None, transport=None, t0_delay_ns: int = 20_000_000) -> None:
    """Send `bodies` (adapter Requests) with the servebench HTTP transport and runner; fills
    `records` (undecoded). `transport` replaces the transport (e.g. a deliberately bad one)."""
    from servebench.load.loop import LoadPlan, drive
    from servebench.transport.http import HttpTransport

    tr = transport or HttpTransport(url)
    if transport is None:
        wires = [tr.encode(b, r.index) for b, r in zip(bodies, records)]
        await tr.prepare(concurrency or len(records))
    else:
        wires = bodies
    try:
        await drive(tr, LoadPlan(wires, records, offsets_ns, concurrency), perf_counter_ns() + t0_delay_ns)
    finally:
        if hasattr(tr, "close"):
            await tr.close()


def run_plan(url: str, n: int, *, concurrency: int | None = None, output_tokens: int = 16, id_base: int = 0,
             transport=None, workers: int = 1, decode: bool = True) -> list[RequestRecord]:
    """n requests (openai-completions) against `url`: closed loop at `concurrency`, or a burst
    when it is None. Returns records (decoded unless decode=False) whose index (and
    X-Request-Id) starts at id_base."""
    from servebench.adapters import ADAPTERS
    from servebench.analysis.decode import decode_records
    from servebench.load.loop import new_loop

    adapter = ADAPTERS[API]
    bodies = [adapter.build("hello world", output_tokens, model="emulator") for _ in range(n)]
    records = [RequestRecord(index=id_base + i, output_tokens=output_tokens) for i in range(n)]
    offsets = None if concurrency else [0] * n
    if workers > 1:
        from servebench.load.split import SplitLoad
        from servebench.load.workers import run_split
        from servebench.transport.http import HttpTransport

        enc = HttpTransport(url)
        wires = [enc.encode(b, r.index) for b, r in zip(bodies, records)]
        run_split(SplitLoad(url, "http", wires, records, offsets, concurrency, None, workers))
    else:
        loop = new_loop()
        try:
            loop.run_until_complete(drive_http(url, records, bodies, offsets_ns=offsets,
                                               concurrency=concurrency, transport=transport))
        finally:
            loop.close()
    if decode:
        decode_records(adapter, records)
    return records


@dataclass(slots=True)
class Floor:
    ttft_overhead_ms: float  # median client TTFT minus the emulator's, one stream at a time
    us_per_token: float  # client CPU per streamed token at load
    ingest_tok_s: float  # tokens/s one worker takes in within CPU_BUDGET of a core


def measure_floor(streams: int = 50, tokens: int = 100, itl_ms: float = 2.0) -> Floor:
    """About two seconds against a private emulator: 5 sequential requests for the TTFT
    overhead, then `streams` concurrent streams at a high token rate for CPU per token."""
    from servebench.emulator import start_emulator

    with start_emulator("openai", ttft_ms=10, itl_ms=itl_ms) as h:
        seq = run_plan(h.url, 5, concurrency=1, output_tokens=4)
        # the load loop's CPU only, as a run's client.cpu_us_per_token counts it: decoding comes
        # after the load (counting it put the floor at 48 us/token against 20 measured in the run)
        cpu0 = time.process_time()
        load = run_plan(h.url, streams, output_tokens=tokens, id_base=1000, decode=False)
        cpu = time.process_time() - cpu0
        from servebench.adapters import ADAPTERS
        from servebench.analysis.decode import decode_records

        decode_records(ADAPTERS[API], load)
        h.stop()
        emu = h.records()
        os.unlink(h.log)
    ttft = compare(seq, emu)["ttft_err_ms"]["p50"]
    got = sum(sum(r.token_counts) for r in load if r.ok)
    if ttft is None or not got:
        raise RuntimeError("self-check against the emulator failed: no request completed")
    us = cpu * 1e6 / got
    return Floor(ttft, us, CPU_BUDGET * 1e6 / us)


def load_warning(floor: Floor, streams: int, tok_s_per_stream: float, workers: int = 1) -> str | None:
    """One line when `streams` streams at `tok_s_per_stream` each need more token ingest than
    `workers` workers have (each capped by the host's cores), else None."""
    # warn where the verdict would fail (CPU_PER_PROCESS_MAX of a core per process); `auto` sizes
    # at CPU_BUDGET, leaving headroom, so a load between the two is measured without a warning
    from servebench.analysis.client_check import CPU_PER_PROCESS_MAX

    usable = max(1, min(workers, os.cpu_count() or 1))
    per_process = CPU_PER_PROCESS_MAX * 1e6 / floor.us_per_token
    need, have = streams * tok_s_per_stream, per_process * usable
    if need <= have:
        return None
    more = f"; try --workers {min(os.cpu_count() or 1, int(need / floor.ingest_tok_s) + 1)}" if usable < (os.cpu_count() or 1) else ""
    return (f"requested load needs ~{need:,.0f} tokens/s of stream reads but this client measured "
            f"{floor.us_per_token:.1f} us/token (~{have:,.0f} tokens/s with {usable} worker(s) at "
            f"{CPU_PER_PROCESS_MAX:g} core each); TTFT/ITL will include client queueing{more}")


@dataclass(slots=True)
class SelfCheck:
    warning: str | None
    workers: int  # load processes to use
    workers_reason: str  # why, for run.json


def _streams(load, warm: Sequence[RequestRecord]) -> int:
    streams = load.concurrency or (load.requests if load.mode == "burst" else None)
    if streams is None:  # open loop without a cap: streams in flight ~ rate x latency
        e2e = [(r.end_ns - r.sent_ns) / 1e9 for r in warm if r.ok and r.sent_ns]
        streams = int(load.rate * max(e2e)) + 1 if e2e else 0
    return streams


def _stream_tok_s(warm: Sequence[RequestRecord]) -> float | None:
    """The fastest per-stream token rate the warm-up requests showed."""
    rates = [(sum(r.token_counts) - r.token_counts[0]) * 1e9 / (r.token_ns[-1] - r.token_ns[0])
             for r in warm if r.ok and len(r.token_ns) > 1 and r.token_ns[-1] > r.token_ns[0]]
    return max(rates) if rates else None


def free_cores(window_s: float = 0.3) -> float:
    """Cores the host left idle over a short window (a local server's busy cores are not free)."""
    import psutil

    a = psutil.cpu_times()
    time.sleep(window_s)
    b = psutil.cpu_times()
    idle = lambda t: t.idle + getattr(t, "iowait", 0.0)
    total = sum(b) - sum(a)
    return (os.cpu_count() or 1) * (idle(b) - idle(a)) / total if total > 0 else 0.0


STREAMS_PER_WORKER = 500  # fallback sizing without a warm-up token rate (docs/performance.md)


def choose_workers(streams: int, need_tok_s: float | None, floor: Floor | None, free: float,
                   cpus: int) -> tuple[int, str]:
    """`--workers auto`: enough load processes that each ingests within CPU_BUDGET of a core at
    the rate the self-check measured, no more than the free cores hold (at least one)."""
    room = max(1, min(cpus, int(free + 0.5)))
    if floor is None:
        return 1, f"auto: {streams} streams, self-check not run: one process"
    if need_tok_s is None:
        want = max(1, -(-streams // STREAMS_PER_WORKER))
        why = f"auto: no warm-up token rate; {streams} streams at {STREAMS_PER_WORKER} per process -> {want}"
    else:
        want = max(1, -(-int(need_tok_s) // max(1, int(floor.ingest_tok_s))))
        why = (f"auto: load needs ~{need_tok_s:,.0f} tokens/s; one process ingests ~{floor.ingest_tok_s:,.0f} "
               f"tokens/s ({floor.us_per_token:.1f} us/token measured, {CPU_BUDGET:g} core) -> {want}")
    n = min(want, room)
    return n, why + (f"; {free:.1f} of {cpus} cores free -> {n}" if n < want else f"; {free:.1f} of {cpus} cores free")


def check(load, warm: Sequence[RequestRecord], enabled: bool | None = None) -> SelfCheck:
    """The self-check and the number of load processes, after the warm-up."""
    streams = _streams(load, warm)
    if enabled is None:
        enabled = streams > DEFAULT_STREAMS_THRESHOLD
    auto = load.workers == "auto"
    tok_s = _stream_tok_s(warm)
    if (n_ray := load.ray_workers) is not None:  # spread over hosts: this host's capacity is not the limit
        return SelfCheck(None, n_ray, f"--workers {load.workers}: {n_ray} Ray actor(s) spread over the cluster's nodes")
    if not enabled:
        if auto:
            why = "self-check off" if streams > DEFAULT_STREAMS_THRESHOLD else f"{streams} streams <= {DEFAULT_STREAMS_THRESHOLD}"
            return SelfCheck(None, 1, f"auto: {why}: one process")
        return SelfCheck(None, load.workers, f"--workers {load.workers}")
    floor = measure_floor() if tok_s is not None or auto else None
    need = streams * tok_s if tok_s is not None else None
    if auto:
        n, why = choose_workers(streams, need, floor, free_cores(), os.cpu_count() or 1)
    else:
        n, why = load.workers, f"--workers {load.workers}"
    warning = load_warning(floor, streams, tok_s, n) if floor is not None and tok_s is not None else None
    return SelfCheck(warning, n, why)
