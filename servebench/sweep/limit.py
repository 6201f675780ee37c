"""Find the limit: the highest load that still meets an SLO, searched against one server,
answered as a range as wide as the noise makes it.

Each level is judged three ways on each bound's 95 % interval (judge.py): met, missed or
undecided. Measure at the start level and double until a level clearly misses; then bisect
between the last level below it and the miss. A level that comes out undecided is measured
again (`repeats` runs in all, pooled) and is then the edge of the noise band: the gap on each
side of it is bisected until a second undecided level says the noise cannot split it further.
Only these boundary levels get repeats; the doubling ladder below is measured once.

The answer: `low` is the highest level shown to meet the SLO, `high` the highest not shown to
miss it (for concurrency: one below the lowest clear miss). A sharp boundary gives low ==
high, the exact answer. Concurrency is searched in whole streams; rates (and trace speeds)
until the bracket is within 10 %. Pure: `measure(level[, repeat])` is given, so the search is
tested on a scripted server and run against a real one unchanged."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from servebench.sweep.judge import MET, MISSED, UNDECIDED, judge
from servebench.store.limitblock import LEVEL
from servebench.sweep.slo_bounds import Bound

def meets(bounds: list[Bound], summary: dict) -> bool:
    # a level where every request failed has no latencies to fail, but it failed
    if not summary.get("completed"):
        return False
    return all(b.met(summary) for b in bounds)



@dataclass(slots=True)
class Probe:
    """One level: its runs (the first, then any repeats), and their pooled verdict."""

    level: float
    runs: list[dict | None] = field(default_factory=list)
    verdict: str = UNDECIDED
    bounds: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class SearchResult:
    low: float | None  # highest level shown to meet the SLO (None: none was)
    high: float | None  # highest level not shown to miss it (None: even the start missed)
    first_fail: float | None  # lowest level shown to miss it (None: none up to the cap)
    probes: dict[float, Probe] = field(default_factory=dict)
    order: list[tuple[float, int]] = field(default_factory=list)  # (level, repeat) as measured

    @property
    def best(self) -> float | None:
        """The level a plan may count on: the range's lower end."""
        return self.low

    @property
    def exact(self) -> bool:
        return self.low is not None and self.low == self.high

    @property
    def tried(self) -> list[tuple[float, str]]:
        return [(lv, self.probes[lv].verdict) for lv in dict.fromkeys(lv for lv, _ in self.order)]


class _Search:
    def __init__(self, measure: Callable[..., dict | None], bounds: list[Bound], repeats: int,
                 integer: bool, rel_tol: float) -> None:
        self.measure, self.bounds, self.repeats = measure, bounds, repeats
        self.integer, self.rel_tol = integer, rel_tol
        self.res = SearchResult(None, None, None)

    def runs(self, level: float, n: int) -> str:
        """The level measured n times in all (pooled) -> its verdict."""
        p = self.res.probes.setdefault(level, Probe(level))
        while len(p.runs) < n:
            r = len(p.runs)
            p.runs.append(self.measure(level) if r == 0 else self.measure(level, r))
            self.res.order.append((level, r))
        p.verdict, p.bounds = judge(self.bounds, p.runs)
        return p.verdict

    def sure(self, level: float) -> str:
        """Once; again up to `repeats` runs when the noise left it undecided (a boundary level)."""
        v = self.runs(level, 1)
        return self.runs(level, self.repeats) if v == UNDECIDED and self.repeats > 1 else v

    def close(self, lo: float, hi: float) -> bool:
        return hi - lo <= 1 if self.integer else hi <= lo * (1 + self.rel_tol)

    def mid(self, lo: float, hi: float) -> float:
        return (lo + hi) // 2 if self.integer else round((lo + hi) / 2, 3)

    def bisect(self, lo: float, hi: float, band: bool) -> None:
        """Narrow each gap between decided levels; a gap whose middle stays undecided once the
        noise band is found (`band`) is as narrow as the noise allows: left there."""
        work = [(lo, hi, band)]
        while work:
            x, y, in_band = work.pop()
            if self.close(x, y):
                continue
            m = self.mid(x, y)
            v = self.sure(m)
            if v == MET:
                work.append((m, y, in_band))
            elif v == MISSED:
                work.append((x, m, in_band))
            elif not in_band:
                work += [(x, m, True), (m, y, True)]

    def answer(self) -> SearchResult:
        res, probes = self.res, self.res.probes
        missed = [lv for lv, p in probes.items() if p.verdict == MISSED]
        res.first_fail = min(missed) if missed else None
        below = sorted(lv for lv in probes if res.first_fail is None or lv < res.first_fail)
        res.low = max((lv for lv in below if probes[lv].verdict == MET), default=None)
        if not below:
            res.high = None
        elif res.first_fail is None:  # met or undecided up to the cap
            res.high = max(below)
        else:
            res.high = res.first_fail - 1 if self.integer else max(below)
        return res


def _check(start: float, max_level: float, repeats: int, rel_tol: float) -> None:
    if not start > 0:
        raise ValueError(f"limit search: start level must be > 0, got {start:g}")
    if not max_level >= start:
        raise ValueError(f"limit search: max level {max_level:g} is below the start level {start:g}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"limit search: repeats must be a whole number >= 1, got {repeats!r}")
    if not 0 < rel_tol < 1:
        raise ValueError(f"limit search: rel_tol must be between 0 and 1, got {rel_tol:g}")


def search(measure: Callable[..., dict | None], bounds: list[Bound], *, start: float = 1, max_level: float = 1024,
           integer: bool = True, rel_tol: float = 0.1, repeats: int = 3) -> SearchResult:
    """measure(level) -> summary, measure(level, r) for its r-th repeat (None: the level could
    not be measured: a miss). A summary may carry `samples` (judge.samples) for intervals."""
    _check(start, max_level, repeats, rel_tol)
    s = _Search(measure, bounds, repeats, integer, rel_tol)
    ladder, level = [], start
    while True:  # the ladder: once per level, up to the first clear miss
        v = s.runs(level, 1)
        ladder.append(level)
        if v == MISSED or level >= max_level:
            break
        level = min(level * 2, max_level)
    hi = level if v == MISSED else None
    below = ladder[:-1] if hi is not None else ladder
    while below and s.sure(below[-1]) == MISSED:  # repeats may show the level under the miss missed too
        hi = below.pop()
    if not below:
        return s.answer()
    top = below[-1]
    if hi is not None:
        s.bisect(top, hi, band=s.res.probes[top].verdict == UNDECIDED)
    _floor(s, below)
    return s.answer()


def _floor(s: _Search, rungs: list[float]) -> None:
    """The band's lower edge. A level shown to meet under it: the gap up to the band narrowed
    as the noise allows. None: walk the ladder down (each rung with repeats, being now the
    band's lower boundary) to one that is. A rung still undecided after its repeats ends the
    walk: the rungs under it ran fewer requests, and their intervals are no narrower."""
    probes = s.res.probes
    while True:
        band = [lv for lv, p in probes.items() if p.verdict == UNDECIDED and len(p.runs) >= s.repeats]
        if not band:
            return
        low = s.answer().low
        if low is not None:
            if low < min(band):
                s.bisect(low, min(band), band=True)
            return
        lower = [lv for lv in rungs if lv < min(band)]
        # met: narrowed up from it on the next pass; undecided after its repeats, or a miss
        # under an undecided level (noise): the walk ends
        if not lower or s.sure(lower[-1]) != MET:
            return


def block(res: SearchResult, slo: str, by: str, repeats: int) -> dict:
    """The search's answer as index.json's group `limit` keeps it. `max_meeting` is the range's
    lower end (what a plan counts on), kept under its old name for older readers."""
    return {"slo": slo, "by": by, "low": res.low, "high": res.high, "level": LEVEL, "exact": res.exact,
            "max_meeting": res.low, "first_missing": res.first_fail, "repeats": repeats, "cells": len(res.order),
            "tried": [{"level": lv, "verdict": v, "met": v == MET, "runs": len(res.probes[lv].runs),
                       "bounds": res.probes[lv].bounds} for lv, v in res.tried],
            "note": _too_few(res) if res.low is None and res.high is not None else None}


def _too_few(res: SearchResult) -> str | None:
    """Why no level was shown to meet: a percentile whose upper bound needs more requests than
    the highest undecided level pooled (a p99 needs 368: below that its interval is open)."""
    for lv in sorted(res.probes, reverse=True):
        for row in res.probes[lv].bounds:
            name = row["bound"].split("<")[0]
            stat = name.rpartition(".p")[2]
            if row["verdict"] == UNDECIDED and row["high"] is None and stat.isdigit():
                q = int(stat) / 100
                need = math.ceil(math.log((1 - LEVEL) / 2) / math.log(q))
                return (f"{name} of {row['n']} requests at {lv:g} has no upper {LEVEL * 100:g} % bound "
                        f"(it needs {need} or more): more requests per level, or a higher --limit-repeats")
    return None


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
