"""The steady-state window (`--steady-state`; peers call it the plateau): pure functions of the
measured records. Definitions: docs/decide.md.

The window opens when the load first reached its target: the in-flight count first reached the
target concurrency (closed loop), or, for an open loop at a rate, the level it settles at (its
time-weighted mean in-flight rounded, at least 1), since a rate has no in-flight target of its own. It
closes at the last release: after that the load only drains. A request counts when it was sent
inside the window, however late it ended: dropping the ones still in flight at the close would
drop the long ones most (a long request is in flight more of the time), biasing latencies low.
Throughput counts every completion inside the window over the window's span, so requests that
straddle an edge are not lost from the rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from servebench.records import RequestRecord


@dataclass(frozen=True, slots=True)
class Window:
    applied: bool
    start_ns: int
    end_ns: int
    rule: str  # how the start was found, or why there is no window


def _events(records: Sequence[RequestRecord]) -> list[tuple[int, int]]:
    ev = [(r.sent_ns, 1) for r in records if r.sent_ns]
    ev += [(r.end_ns, -1) for r in records if r.sent_ns and r.end_ns]
    return sorted(ev)  # an end before a start at the same ns: the slot was free first


def _first_reach(records: Sequence[RequestRecord], target: int) -> int | None:
    level = 0
    for t, d in _events(records):
        level += d
        if d > 0 and level >= target:
            return t
    return None


def _mean_in_flight(records: Sequence[RequestRecord]) -> float:
    ev = _events(records)
    if len(ev) < 2 or ev[-1][0] <= ev[0][0]:
        return 0.0
    level, area, prev = 0, 0, ev[0][0]
    for t, d in ev:
        area += level * (t - prev)
        prev, level = t, level + d
    return area / (ev[-1][0] - ev[0][0])


def find(records: Sequence[RequestRecord], target_concurrency: int | None,
         target_rate: float | None) -> Window:
    """The window of the measured (non-warm-up) records; applied False says why not."""
    sent = [r.sent_ns for r in records if r.sent_ns]
    if not sent:
        return Window(False, 0, 0, "nothing was sent")
    last = max(sent)
    if target_rate:
        target, how = max(1, round(_mean_in_flight(records))), "in flight first reached its settled level {} (rate {:g}/s)"
        how = how.format(target, target_rate)
    elif target_concurrency:
        target, how = target_concurrency, f"in flight first reached the target concurrency {target_concurrency}"
    else:
        return Window(False, min(sent), last, "a burst has no target load to reach: whole run kept")
    start = _first_reach(records, target)
    if start is None:
        return Window(False, min(sent), last, f"in flight never reached {target}: whole run kept")
    return Window(True, start, last, how + "; closes at the last release")


def _inside(r: RequestRecord, w: Window) -> bool:
    if not r.sent_ns:  # failed before it could be sent: counted where it was due
        return w.start_ns <= (r.scheduled_ns or 0) <= w.end_ns
    return w.start_ns <= r.sent_ns <= w.end_ns


def keep(records: Sequence[RequestRecord], w: Window) -> list[RequestRecord]:
    return [r for r in records if _inside(r, w)] if w.applied else list(records)


def completions(records: Sequence[RequestRecord], w: Window) -> list[RequestRecord]:
    """Successful requests that ended inside the window, wherever they were sent."""
    return [r for r in records if r.ok and r.end_ns and w.start_ns <= r.end_ns <= w.end_ns]


def stored(records: Sequence[RequestRecord], blk: dict | None) -> Window | None:
    """The window a summary's `steady_state` block recorded, on the same measured records
    (its offsets count from their first send); None when no window was applied."""
    if not blk or not blk.get("applied") or blk.get("start_offset_ns") is None:
        return None
    t0 = min((r.sent_ns for r in records if r.sent_ns), default=0)
    return Window(True, t0 + int(blk["start_offset_ns"]), t0 + int(blk["end_offset_ns"]), blk.get("rule") or "")


def block(records: Sequence[RequestRecord], kept: Sequence[RequestRecord], w: Window) -> dict:
    """summary.json's `steady_state`: the window as offsets from the first measured send."""
    t0 = min((r.sent_ns for r in records if r.sent_ns), default=0)
    return {"applied": w.applied, "rule": w.rule,
            "start_offset_ns": w.start_ns - t0 if w.applied else None,
            "end_offset_ns": w.end_ns - t0 if w.applied else None,
            "requests_kept": len(kept), "requests_left_out": len(records) - len(kept)}
