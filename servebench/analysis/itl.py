"""summary.json's ITL figures (`itl_ms` and its order-statistic intervals), without every gap in
memory at once.

ITL is the one per-token sample a summary reduces: an hour at 9,500 tokens/s is 34 M gaps, and
one float64 array of them (8 B a gap) beside the records' stamps (~16 B a token) was what still
made the post-load peak grow with the run (issue 20, docs/performance.md "Memory over long
runs"). Here the gaps are recomputed a block of records at a time from the records' stamps (in
memory, or read back from disk: store/tokens.py) as often as analysis/select.py needs them:
the order statistics every figure reads are exact (the same values a sort of every gap gives),
and mean and std come from exactly rounded sums (the last bits may differ from numpy's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from servebench.analysis import select
from servebench.analysis.intervals import LEVEL, Interval, quantile_ci_at, quantile_ranks
from servebench.analysis.per_request import MS, PERCENTILES, gap_count
from servebench.records import RequestRecord, token_arrays

BLOCK = 1 << 18  # stamps read back and turned into gaps at once (~5 MB at the block's top)


@dataclass(frozen=True, slots=True)
class ItlFigures:
    dist: dict[str, float | None]  # summary.json's itl_ms, as metrics.dist gives it
    intervals: dict[int, Interval]  # percentile -> order-statistic interval at `level`
    level: float = LEVEL


def figures(records: Sequence[RequestRecord], level: float = LEVEL) -> ItlFigures:
    """Every figure summary.json gives of the records' gaps (records: the ones that count)."""
    recs = [r for r in records if gap_count(r)]
    n = sum(gap_count(r) for r in recs)
    bounds = [k for p in PERCENTILES for k in quantile_ranks(n, p, level) if 0 <= k < n] if n else []
    out, at = select.dist(lambda: blocks(recs, BLOCK), n, bounds)  # the blocks are made again for every pass
    return ItlFigures(out, {p: quantile_ci_at(n, p, at, level) for p in PERCENTILES}, level)


def blocks(records: Sequence[RequestRecord], block: int = BLOCK) -> Iterator[np.ndarray]:
    """The records' gaps in ms (per_request.itl_gaps_ns's, / MS), a few records' at a time: those
    in memory in their order, then those on disk in the file's order, one read per block."""
    ns: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    held = 0
    for t, c in _arrays(records, block):
        if len(t) < 2:
            continue
        ns.append(t)
        counts.append(c)
        held += len(t)
        if held >= block:
            yield _gaps(ns, counts)
            ns, counts, held = [], [], 0
    if ns:
        yield _gaps(ns, counts)


def _arrays(records: Sequence[RequestRecord], block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    on_disk = sorted((r.tok for r in records if r.tok is not None and r.tok.src is not None),
                     key=lambda t: (id(t.src), t.at))
    for r in records:
        if r.tok is None or r.tok.src is None:
            t, c = token_arrays(r)
            yield np.asarray(t, dtype=np.int64), np.asarray(c, dtype=np.int64)
    i = 0
    while i < len(on_disk):  # a run of records close together in the file: one read
        first, j = on_disk[i], i + 1
        while (j < len(on_disk) and on_disk[j].src is first.src
               and on_disk[j].at + on_disk[j].events - first.at <= block):
            j += 1
        end = max(t.at + t.events for t in on_disk[i:j])
        ns, counts = first.src.span(first.at, end)
        for t in on_disk[i:j]:
            yield ns[t.at - first.at:t.at - first.at + t.events], counts[t.at - first.at:t.at - first.at + t.events]
        i = j


def _gaps(ns: list[np.ndarray], counts: list[np.ndarray]) -> np.ndarray:
    """itl_gaps_ns's steps on several records at once: int64 differences within each record, as
    float64, an event of k > 1 tokens as k gaps of gap / k (k = 1 divides exactly), / MS."""
    t = np.concatenate(ns)
    c = np.concatenate(counts)
    later = np.ones(t.size, dtype=bool)  # every event but a record's first ends a gap
    later[np.cumsum([0] + [len(a) for a in ns[:-1]])] = False
    j = np.flatnonzero(later)
    g = (t[j] - t[j - 1]).astype(np.float64)
    k = np.maximum(c[j], 1).astype(np.int64)
    if (k > 1).any():
        g = np.repeat(g / k, k)
    g /= MS
    return g
