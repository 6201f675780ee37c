"""The simulator's summary of the requests it finished (sim.Req): means, medians and p99s per
request, and throughput."""

from __future__ import annotations

import statistics


def summarize(done: list, load) -> dict:
    """Means and medians per request; throughput over the steady part of a closed loop (after
    each user's first request) and over the whole run otherwise."""
    if not done:
        return {"completed": 0}
    ttft = [r.first - r.arrive for r in done]
    e2e = [r.done - r.arrive for r in done]
    tpot = [(r.done - r.first) / (r.n_out - 1) for r in done if r.n_out > 1]
    queue = [r.admit - r.arrive for r in done]  # to its last admission (a preempted one's readmission)
    server = [(r.done - r.admit) / r.n_out for r in done]  # TGI's time per token: queue excluded
    by_done = sorted(done, key=lambda r: r.done)
    skip = min(load.users, len(by_done) // 2) if load.mode == "closed" else 0
    t0 = by_done[skip - 1].done if skip else min(r.arrive for r in done)
    span = by_done[-1].done - t0
    # the window opens at the skip-th completion: others that ended in the same step are before it too
    counted = [r for r in by_done[skip:] if r.done > t0] if skip else by_done
    toks = sum(r.n_out for r in counted)
    out = {"completed": len(done), "makespan_s": by_done[-1].done - min(r.arrive for r in done),
           "peak_in_flight": peak_in_flight(done),
           "output_tok_s": toks / span if span > 0 else float("nan"),
           "request_throughput": len(counted) / span if span > 0 else float("nan")}
    for k, v in (("ttft_ms", ttft), ("e2e_ms", e2e), ("tpot_ms", tpot), ("ms_per_token", server), ("queue_ms", queue)):
        if v:
            out[k] = statistics.fmean(v) * 1e3
            out[k + "_p50"] = statistics.median(v) * 1e3
            out[k + "_p99"] = (statistics.quantiles(v, n=100, method="inclusive")[98] if len(v) > 1 else v[0]) * 1e3
    return out


def peak_in_flight(done: list) -> int:
    """The most requests between arrival and completion at once (queued or running): what an
    engine's front door counts (TGI's --max-concurrent-requests). A completion at the instant of
    an arrival frees its place first."""
    events = sorted([(r.arrive, 1) for r in done] + [(r.done, -1) for r in done])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most
