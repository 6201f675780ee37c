"""Did the client keep up? A pure function of what a run recorded (summary.json).

A benchmark client that falls behind reports the server slower than it is, and says nothing
unless it checks itself. Three recorded signals say whether servebench was the bottleneck
(definitions and measured reference values: docs/metrics.md, "Client verdict"):

- event-loop lag: how late a 50 ms timer in each load loop fired. Sends (and, without kernel
  stamps, reads) wait as long.
- read lag: how long received body bytes waited in the socket before the loop read them (the
  read time minus the kernel's receive stamp). Token times carry the kernel stamp, so this lag
  does not enter them while it stays under the gap between two tokens of a stream (measured:
  read lag p99 5.4 ms at 50 streams, ITL error p99 0.03 ms). A read that waited longer than the
  median gap means tokens of every stream in flight may have been read together and share a
  stamp; one such stall is enough (a burst of 200 with one 19 ms stall: read lag p99 3.4 ms,
  ITL error p99 9.7 ms), so the check is on the longest read lag, not a percentile. The gap is
  TPOT p50: a stream's mean time per token, which bunched writes do not shrink.
- CPU saturation: the load processes' CPU time over the measured window, per process. A loop
  busy nearly all the time queues every read behind the others.

Any check over its limit makes the verdict "did not keep up". A check whose input was not
recorded (an old summary, a run with nothing measured) is left out, never guessed.
"""

from __future__ import annotations

from typing import Any

# p99 of the 50 ms loop-lag probe. Measured: 1-5 ms for a keeping-up client at 50-500 streams
# on a shared 2-core host; 24 ms with a real-time neighbour busy 20 of every 40 ms on its core;
# 526-1636 ms for one process at 2000-5000 streams (docs/performance.md).
LOOP_LAG_P99_MS = 10.0
# p99 of send time minus scheduled time in an uncapped open loop (a trace, --rate): the issue's
# target is < 1 ms at 200 requests/s on a quiet host; past 10 ms the load offered is no longer
# the trace's (bursts smeared), as for the loop lag above.
SEND_ERROR_P99_MS = 10.0
# CPU cores per load process over the window: above this the loop has no idle time left.
CPU_PER_PROCESS_MAX = 0.9


def _get(d: Any, key: str) -> float | None:
    return d.get(key) if isinstance(d, dict) else None


def _p99(d: Any) -> float | None:
    return _get(d, "p99")


def judge(summary: dict) -> dict[str, Any]:
    """{"kept_up": bool | None, "reasons": [one line per failed check], "checks": {name: {value,
    limit, ok}}}. kept_up is None when no check had data."""
    client = summary.get("client") or {}
    workers = client.get("workers") or 1
    cores = client.get("cpu_cores")
    values = {
        "loop_lag_p99_ms": (_p99(summary.get("loop_lag_ms")), LOOP_LAG_P99_MS),
        "read_lag_max_ms": (_get(summary.get("read_lag_ms"), "max"), _token_gap(summary)),
        "cpu_cores_per_process": (None if cores is None else cores / workers, CPU_PER_PROCESS_MAX),
        "send_error_p99_ms": (_send_error_p99(summary), SEND_ERROR_P99_MS),
    }
    checks, reasons = {}, []
    for name, (v, limit) in values.items():
        if v is None or limit is None:
            continue
        ok = v <= limit
        checks[name] = {"value": round(float(v), 3), "limit": limit, "ok": ok}
        if not ok:
            reasons.append(_REASON[name].format(v=v, limit=limit))
    return {"kept_up": all(c["ok"] for c in checks.values()) if checks else None, "reasons": reasons,
            "checks": checks}


def _send_error_p99(summary: dict) -> float | None:
    """An open loop's send error p99 (analysis.fidelity), when no --concurrency cap made
    requests wait for a slot (that wait is the server's, not the client's)."""
    sched = summary.get("schedule")
    if not isinstance(sched, dict) or sched.get("capped"):
        return None
    return _p99(sched.get("send_error_ms"))


def _token_gap(summary: dict) -> float | None:
    """The median time between two tokens of a stream: TPOT p50 (a stream's mean gap). Not the
    ITL median: a server that falls behind writes several tokens at once, and its ITL median is
    then 0 (measured: the emulator at 50k tokens/s), which would judge every read late. Old
    summaries without TPOT: the ITL median."""
    gap = _get(summary.get("tpot_ms"), "p50")
    return gap if gap else _get(summary.get("itl_ms"), "p50")


_REASON = {
    "loop_lag_p99_ms": "event-loop lag p99 {v:.1f} ms > {limit:g} ms",
    "read_lag_max_ms": "a read waited {v:.1f} ms, longer than the median gap between tokens (TPOT p50 {limit:.1f} ms)",
    "cpu_cores_per_process": "CPU {v:.2f} cores per load process > {limit:g}",
    "send_error_p99_ms": "requests left {v:.1f} ms after their scheduled time (p99) > {limit:g} ms: the schedule was not kept",
}


def warning(verdict: dict) -> str | None:
    """The report's warning line when the client did not keep up, else None."""
    if verdict.get("kept_up") is not False:
        return None
    return ("client did not keep up (" + "; ".join(verdict["reasons"]) + "): latencies include client "
            "queueing and throughput may be the client's; try more --workers, fewer streams or a quieter host")
