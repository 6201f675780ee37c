"""Find the limit: the highest load that still meets an SLO, searched against one server.

Measure at the start level, double while the SLO holds, then bisect between the last level
that met it and the first that did not. Concurrency is searched in whole streams; rates
(and trace speeds)
until the bracket is within 10 %. Pure: `measure(level)` is given, so the search is tested
on a scripted server and run against a real one unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

_METRICS = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2e": "e2e_ms", "e2el": "e2e_ms",
            "ms_per_token": "ms_per_token"}
_TERM = re.compile(r"^\s*([a-z0-9_]+?)_(p50|p90|p95|p99|mean|max)\s*(<=|<)\s*([0-9.]+)\s*(ms|s)?\s*$")
_ERR = re.compile(r"^\s*error_rate\s*(<=|<)\s*([0-9.]+)\s*$")


@dataclass(frozen=True, slots=True)
class Bound:
    metric: str  # summary key, e.g. ttft_ms
    stat: str  # p99
    op: str  # <= or <
    limit: float  # in ms (or a fraction for error_rate)

    @property
    def name(self) -> str:
        return f"{self.metric}.{self.stat}" if self.stat else self.metric

    def value(self, summary: dict) -> float | None:
        if self.metric == "error_rate":
            return summary.get("error_rate")
        return (summary.get(self.metric) or {}).get(self.stat)

    def met(self, summary: dict) -> bool:
        v = self.value(summary)
        if v is None:
            return False  # nothing measured is never a pass
        return v <= self.limit if self.op == "<=" else v < self.limit


def parse_slo(text: str) -> list[Bound]:
    """`ttft_p99<=500ms,tpot_p50<=50ms,error_rate<=0.01` -> bounds (times in ms)."""
    bounds = []
    for part in [p for p in text.split(",") if p.strip()]:
        if m := _ERR.match(part):
            bounds.append(Bound("error_rate", "", m[1], float(m[2])))
            continue
        m = _TERM.match(part.strip().lower())
        if not m or m[1] not in _METRICS:
            raise ValueError(f"bad SLO term {part.strip()!r}: expected e.g. ttft_p99<=500ms "
                             f"(metrics: {', '.join(sorted(_METRICS))}, error_rate)")
        limit = float(m[4]) * (1000.0 if m[5] == "s" else 1.0)
        bounds.append(Bound(_METRICS[m[1]], m[2], m[3], limit))
    if not bounds:
        raise ValueError("empty SLO")
    return bounds


def meets(bounds: list[Bound], summary: dict) -> bool:
    # a level where every request failed has no latencies to fail, but it failed
    if not summary.get("completed"):
        return False
    return all(b.met(summary) for b in bounds)


@dataclass(slots=True)
class SearchResult:
    best: float | None  # highest level that met the SLO (None: not even the start did)
    first_fail: float | None  # lowest level seen to miss it (None: never missed up to max)
    tried: list[tuple[float, bool]] = field(default_factory=list)


def search(measure: Callable[[float], dict | None], bounds: list[Bound], *, start: float = 1, max_level: float = 1024,
           integer: bool = True, rel_tol: float = 0.1) -> SearchResult:
    """measure(level) -> summary (None: the level could not be measured: a miss)."""
    res = SearchResult(None, None)

    def ok(level: float) -> bool:
        s = measure(level)
        good = s is not None and meets(bounds, s)
        res.tried.append((level, good))
        return good

    level = start
    while True:
        if ok(level):
            res.best = level
            if level >= max_level:
                return res
            level = min(level * 2, max_level)
        else:
            res.first_fail = level
            break
    lo, hi = res.best, res.first_fail
    if lo is None:
        return res
    while True:
        if integer:
            if hi - lo <= 1:
                break
            mid = (lo + hi) // 2
        else:
            if hi <= lo * (1 + rel_tol):
                break
            mid = round((lo + hi) / 2, 3)
        if ok(mid):
            lo = res.best = mid
        else:
            hi = res.first_fail = mid
    return res


def closeness(bounds: list[Bound], summary: dict | None) -> dict | None:
    """Each bound's measured value as a share of its limit at one level, and the bound that
    binds first there: the one closest to (or furthest past) its limit."""
    if not summary:
        return None
    rows = []
    for b in bounds:
        v = b.value(summary)
        # a zero limit (error_rate<=0) met at this level was met with nothing to spare or use
        share = None if v is None else (v / b.limit if b.limit > 0 else (0.0 if v <= 0 else None))
        rows.append({"bound": f"{b.name}{b.op}{b.limit:g}", "value": v, "limit": b.limit, "share": share})
    ranked = [r for r in rows if r["share"] is not None]
    binding = max(ranked, key=lambda r: r["share"])["bound"] if ranked else None
    return {"bounds": rows, "binding": binding}
