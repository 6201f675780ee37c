"""Did the load go out as planned? Pure functions of the records (docs/metrics.md, "Schedule
fidelity" and "Workload").

An open loop (a trace, or --rate) promises each request at a time. A client that sends late
offers a smoother, lighter load than the trace, and the server looks better than it is; so the
send error (sent_ns - scheduled_ns, per request) and the sent vs scheduled count per minute are
part of the result, and the client verdict (client_check) judges the send error.
"""

from __future__ import annotations

from typing import Sequence

from servebench.analysis.metrics import MS, dist, input_tokens, output_tokens
from servebench.records import RequestRecord

MINUTE_NS = 60_000_000_000


def schedule(records: Sequence[RequestRecord], capped: bool) -> dict | None:
    """send_error_ms (sent - scheduled; with a --concurrency cap it includes the slot wait),
    and per minute of the replay (from the first scheduled release) the requests scheduled and
    sent in it. None when nothing was released on a schedule."""
    rel = [r for r in records if not r.warmup and r.scheduled_ns and r.sent_ns]
    if not rel:
        return None
    t0 = min(r.scheduled_ns for r in rel)
    minutes: dict[int, list[int]] = {}
    for r in rel:
        minutes.setdefault((r.scheduled_ns - t0) // MINUTE_NS, [0, 0])[0] += 1
        minutes.setdefault((r.sent_ns - t0) // MINUTE_NS, [0, 0])[1] += 1
    per_minute = [{"minute": int(k), "scheduled": a, "sent": b} for k, (a, b) in sorted(minutes.items())]
    full = [m for m in per_minute[:-1] if m["scheduled"]]  # the last minute is partial; sends spill into it
    worst = max((abs(m["sent"] - m["scheduled"]) / m["scheduled"] for m in full), default=None)
    return {
        "send_error_ms": dist([(r.sent_ns - r.scheduled_ns) / MS for r in rel]),
        "capped": capped,
        "per_minute": per_minute,
        "max_minute_deviation": worst,  # |sent - scheduled| / scheduled, worst full minute
    }


def achieved_lengths(records: Sequence[RequestRecord]) -> dict:
    """Input lengths as the server counted them (else as requested) and output lengths achieved,
    over the completed measured requests: the distributions to set beside the requested ones."""
    ok = [r for r in records if not r.warmup and r.ok]
    return {"input": dist([input_tokens(r) for r in ok]), "output": dist([output_tokens(r) for r in ok])}


def blocks(info: dict | None, records: Sequence[RequestRecord], open_loop: bool, capped: bool) -> dict:
    """summary.json's "workload" (what was asked for, beside what was achieved) and "schedule"."""
    out: dict = {}
    if info:
        wl = {k: v for k, v in info.items() if k != "lengths"}
        got = achieved_lengths(records)
        if "lengths" in info:
            wl["lengths"] = {k: {**v, "achieved": got[k]} for k, v in info["lengths"].items()}
        out["workload"] = wl
    if open_loop:
        out["schedule"] = schedule(records, capped)
    return out


def cache_start(run_info: dict, launcher: str) -> str:
    """Whether the engine's prefix cache started cold for this load, from what the session
    did (run.json's "session"): reset just before it (a sweep point), or a server this run
    started itself; else unknown. Warm-up requests come after either and share no prefix
    with a trace's or a prefix mix's blocks."""
    resets = (run_info.get("session") or {}).get("cache_resets") or []
    if resets and resets[-1].get("reset"):
        return "cold: prefix cache reset before this load"
    if launcher != "external" and "cell" not in run_info:
        return "cold: server started for this run"
    if resets:
        return f"unknown: the cache reset failed ({resets[-1].get('reason') or resets[-1].get('status')})"
    return "unknown: a server already running, cache not reset"
