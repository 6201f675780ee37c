"""Metrics: pure functions of decoded request records. Definitions: docs/metrics.md.

Every number here is computed from RequestRecord timestamps (perf_counter_ns) and counts;
nothing is measured here. Percentiles use numpy's default (linear interpolation), as
`vllm bench serve` does.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

# the per-request figures live in per_request.py (run_intervals builds on them too); named here
# as well, where the rest of servebench has always read them
from servebench.analysis.per_request import (MS, PERCENTILES, e2e_ns, input_tokens, itl_gaps_ns,  # noqa: F401
                                             output_tokens, tpot_ns, ttft_ns)
from servebench.analysis import per_request
from servebench.analysis.itl import ItlFigures
from servebench.records import RequestRecord


def dist(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p95, p99, min, max, std of a sample (None when empty)."""
    if len(values) == 0:
        return {k: None for k in ("mean", "p50", "p90", "p95", "p99", "min", "max", "std", "n")}
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {"mean": float(a.mean())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)):
        out[f"p{p}"] = float(v)
    out.update(min=float(a.min()), max=float(a.max()), std=float(a.std()), n=int(a.size))
    return out


def in_flight(records: Iterable[RequestRecord], start_ns: int, end_ns: int) -> dict[str, float]:
    """Requests in flight (sent, not yet ended) over [start, end]: time-weighted mean and max."""
    events: list[tuple[int, int]] = []
    for r in records:
        if r.sent_ns and r.end_ns:
            events.append((r.sent_ns, 1))
            events.append((r.end_ns, -1))
    if not events or end_ns <= start_ns:
        return {"mean": 0.0, "max": 0}
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same ns
    level = peak = 0
    area = 0
    prev = start_ns
    entered = False
    for t, d in events:
        if t >= end_ns:  # a level from the window's end on is held for no time inside it
            break
        if t >= start_ns and not entered:
            peak, entered = level, True  # held at the window's start: a level only before it is not its peak
        tc = max(t, start_ns)
        area += level * (tc - prev)
        prev = tc
        level += d
        if entered:
            peak = max(peak, level)
    if not entered:
        peak = level
    area += level * (end_ns - prev)
    return {"mean": area / (end_ns - start_ns), "max": peak}


def summarize(records: Sequence[RequestRecord], *, target_concurrency: int | None = None,
              target_rate: float | None = None, steady_state: bool = False) -> dict:
    """The run summary (summary.json's core) from decoded records; warm-up excluded. With
    steady_state, only the window after the load reached its target (analysis/steady.py)."""
    # imported here: both build on this module's per-request functions
    from servebench.analysis import itl, run_intervals, steady

    # a request that was due but failed before it could be sent (no connection: the server
    # is gone) is a failed request; only sent ones have timings
    measured = [r for r in records if not r.warmup and (r.sent_ns or r.error)]
    win = steady.find(measured, target_concurrency, target_rate) if steady_state else None
    kept = steady.keep(measured, win) if win else measured
    ok = [r for r in kept if r.ok]
    gaps = itl.figures(ok)  # once for both blocks: the one per-token sample (issue 20)
    out = _summary(kept, target_concurrency, target_rate, gaps)
    start = min((r.sent_ns for r in kept if r.sent_ns), default=0)
    done, end = ok, max((r.end_ns for r in kept if r.sent_ns and r.end_ns), default=start)
    if win is not None:
        if win.applied:  # the rate over the window: every completion inside it, wherever sent
            done, start, end = steady.completions(measured, win), win.start_ns, win.end_ns
            _rates(out, done, (end - start) / 1e9)
            # over the window too, every request in flight in it (one sent before it included)
            f = in_flight(measured, start, end)
            out["concurrency"].update(mean_in_flight=f["mean"], max_in_flight=f["max"])
        out["steady_state"] = steady.block(measured, kept, win)
    out["intervals"] = run_intervals.block(ok, start, end, done=done, itl=gaps)
    return out


def _rates(out: dict, done: list[RequestRecord], dur_s: float) -> None:
    o = sum(output_tokens(r) for r in done)
    i = sum(input_tokens(r) for r in done)
    out["duration_s"] = dur_s
    out["request_throughput"] = len(done) / dur_s if dur_s > 0 else 0.0
    out["output_token_throughput"] = o / dur_s if dur_s > 0 else 0.0
    out["total_token_throughput"] = (o + i) / dur_s if dur_s > 0 else 0.0


def _summary(measured: list[RequestRecord], target_concurrency: int | None, target_rate: float | None,
             gaps: ItlFigures) -> dict:
    timed = [r for r in measured if r.sent_ns]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    start = min((r.sent_ns for r in timed), default=0)
    end = max((r.end_ns for r in timed if r.end_ns), default=start)
    dur_s = (end - start) / 1e9 if end > start else 0.0

    out_tok = [output_tokens(r) for r in ok]
    in_tok = [input_tokens(r) for r in ok]
    per = lambda xs: (sum(xs) / dur_s) if dur_s > 0 else 0.0  # noqa: E731
    sent = sorted(r.sent_ns for r in timed)
    flight = in_flight(measured, start, end)
    errors = Counter((r.error or f"HTTP {r.status}") for r in failed)
    return {
        "completed": len(ok),
        "failed": len(failed),
        "error_rate": len(failed) / len(measured) if measured else 0.0,
        "errors": dict(errors.most_common(10)),
        "duration_s": dur_s,
        "request_throughput": per([1] * len(ok)),
        "output_token_throughput": per(out_tok),
        "total_token_throughput": per(out_tok) + per(in_tok),
        **_latencies(ok, out_tok, gaps),
        **_token_counts(ok, out_tok, in_tok),
        "concurrency": {
            "target": target_concurrency,
            "mean_in_flight": flight["mean"],
            "max_in_flight": flight["max"],
        },
        "rate": {
            "target": target_rate,
            "achieved": _per_s(sent),
            # what the schedule itself asked for: a Poisson draw of 30 can ask 8.25/s of a 10/s target
            **({"offered": _per_s(sorted(r.scheduled_ns for r in measured if r.scheduled_ns))} if target_rate else {}),
        },
        **_client_timing(measured, timed, sent),
    }


def _per_s(stamps: list[int]) -> float | None:
    """(n - 1) / (last - first): the rate of n sorted events."""
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) if len(stamps) > 1 and stamps[-1] > stamps[0] else None


def _latencies(ok: list[RequestRecord], out_tok: list[int], gaps: ItlFigures) -> dict:
    return {
        "ttft_ms": dist([v / MS for r in ok if (v := ttft_ns(r)) is not None]),
        "tpot_ms": dist([v / MS for r in ok if (v := tpot_ns(r)) is not None]),
        "itl_ms": gaps.dist,
        "e2e_ms": dist([e2e_ns(r) / MS for r in ok]),
        "ms_per_token": dist([e2e_ns(r) / MS / n for r, n in zip(ok, out_tok) if n > 0]),
    }


def _token_counts(ok: list[RequestRecord], out_tok: list[int], in_tok: list[int]) -> dict:
    """Requested vs server-counted vs streamed tokens: where they differ, the run says so."""
    req_out = [r.output_tokens for r in ok]
    req_in = [r.input_tokens for r in ok]
    streamed = [per_request.streamed(r) for r in ok]
    return {
        "input_tokens": {
            "requested_mean": float(np.mean(req_in)) if req_in else None,
            "server_mean": float(np.mean(in_tok)) if in_tok else None,
            "total": int(sum(in_tok)),
            "mismatched_requests": sum(
                1 for r in ok if r.server_input_tokens is not None and r.server_input_tokens != r.input_tokens
            ),
            "server_reported": sum(1 for r in ok if r.server_input_tokens is not None),
        },
        "output_tokens": {
            "requested_mean": float(np.mean(req_out)) if req_out else None,
            "achieved_mean": float(np.mean(out_tok)) if out_tok else None,
            "total": int(sum(out_tok)),
            "shortfall_requests": sum(1 for r, n in zip(ok, out_tok) if n < r.output_tokens),
            "server_reported": sum(1 for r in ok if r.server_output_tokens is not None),
            # no usage from the server: one token per streamed chunk with text (adapter's rule)
            "client_counted": sum(1 for r in ok if r.server_output_tokens is None),
            "streamed_total": int(sum(streamed)),
            "count_mismatches": sum(
                1 for r, s in zip(ok, streamed) if r.server_output_tokens is not None and r.server_output_tokens != s
            ),
        },
    }


def _client_timing(measured: list[RequestRecord], timed: list[RequestRecord], sent: list[int]) -> dict:
    """The client's own delays: waiting for a slot, dispatching, connecting, releasing."""
    sched = sorted(r.scheduled_ns for r in measured if r.scheduled_ns)
    return {
        "slot_wait_ms": dist([(r.slot_ns - r.scheduled_ns) / MS for r in measured if r.slot_ns]),
        "dispatch_lag_ms": dist([(r.sent_ns - (r.slot_ns or r.scheduled_ns)) / MS for r in timed]),
        "connect_ms": dist([r.connect_ns / MS for r in measured if r.connect_ns]),
        "release_spread_ms": (sched[-1] - sched[0]) / MS if sched else None,
        "send_spread_ms": (sent[-1] - sent[0]) / MS if sent else None,
    }
