"""summary.json's ITL figures (`itl_ms` and its order-statistic intervals) from one array.

ITL is the one per-token sample a summary reduces: after a long run it is by far the largest
thing the analysis builds (8 B a gap; an hour at 9,500 tokens/s is 34 M gaps). It used to be
built twice (metrics and run_intervals), each time with a copy per percentile call and per
order-statistic interval. Here it is built once, reduced to the figures in a fixed order, and
dropped before the bootstraps run (issue 20, docs/performance.md "Memory over long runs"):
- mean and std first, on the gaps in record order: a float sum depends on its order, and
  summary.json must keep its bytes; std squares the array in place, which is then refilled
  (a second pass over the records instead of a second array);
- then one in-place sort: min, max and every order-statistic interval read the sorted array;
- percentiles last, with numpy's own method on that array (overwrite_input: no copy); a
  percentile reads only order statistics, so it is the same value as from the unsorted gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from servebench.analysis.intervals import LEVEL, Interval, quantile_ci
from servebench.analysis.per_request import PERCENTILES, itl_ms
from servebench.records import RequestRecord

_KEYS = ("mean", *(f"p{p}" for p in PERCENTILES), "min", "max", "std", "n")  # metrics.dist's


@dataclass(frozen=True, slots=True)
class ItlFigures:
    dist: dict[str, float | None]  # summary.json's itl_ms, as metrics.dist gives it
    intervals: dict[int, Interval]  # percentile -> order-statistic interval at `level`
    level: float = LEVEL


def figures(records: Sequence[RequestRecord], level: float = LEVEL) -> ItlFigures:
    """Every figure summary.json gives of the records' gaps; holds one float64 array (8 B a
    gap), only while it runs."""
    a = itl_ms(records)
    n = int(a.size)
    if n == 0:
        return ItlFigures(dict.fromkeys(_KEYS), {p: quantile_ci(a, p, level) for p in PERCENTILES}, level)
    mean = float(a.mean())
    # np.std's own steps ((a - mean)^2, summed in the same order, / n, sqrt), in place: its
    # `a - mean` would be a second array; the gaps are then refilled into the same one
    a -= mean
    a *= a
    std = float(np.sqrt(a.sum() / n))
    itl_ms(records, out=a)
    a.sort()
    ivs = {p: quantile_ci(a, p, level, presorted=True) for p in PERCENTILES}
    lo, hi = float(a[0]), float(a[-1])
    pct = np.percentile(a, PERCENTILES, overwrite_input=True)  # may reorder a: its last use
    del a
    out: dict[str, float | None] = {"mean": mean}
    for p, v in zip(PERCENTILES, pct):
        out[f"p{p}"] = float(v)
    out.update(min=lo, max=hi, std=std, n=n)
    return ItlFigures(out, ivs, level)
