"""95 % intervals for one run's headline figures: summary.json's `intervals` block.

Pure functions of the decoded records the summary was computed from. Methods (docs/metrics.md):
- percentiles of per-request values: `order-statistic` (intervals.quantile_ci);
- means of per-request values: `bootstrap` over requests (intervals.bootstrap_ci);
- ITL mean: `bootstrap` over requests of sum(gaps) / count(gaps), since the gaps of one request
  are not independent of each other (a slow request has slow gaps);
- throughput: `batch-means`: the measured span cut into equal time windows, the figure's rate
  in each window, and Student's t over the window rates. Resampling requests with the span fixed
  would give req/s no width at all (the count never changes); the windows see the rate move.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from servebench.analysis.intervals import LEVEL, Interval, bootstrap_ci, quantile_ci, repeats_ci
from servebench.analysis.itl import ItlFigures
from servebench.analysis.itl import figures as itl_figures
from servebench.analysis.per_request import (MS, PERCENTILES, e2e_ns, gap_count, gap_sum_ns, input_tokens,
                                             output_tokens, tpot_ns, ttft_ns)
from servebench.records import RequestRecord

WINDOWS = 10  # batch-means windows; fewer when there are few completions
MIN_WINDOWS = 5  # below this Student's t is so wide (t = 12.7 at 2) that no interval says more
MIN_PER_WINDOW = 5  # completions a window should see on average, or the rates are mostly noise


def figure(iv: Interval) -> dict:
    """One figure's entry: the exact shape the report and the run table read."""
    return {"low": iv.low, "high": iv.high, "method": iv.method, "n": iv.n}


def batch_means(ends_ns: Sequence[int], weights: Sequence[float], start_ns: int, end_ns: int,
                level: float = LEVEL) -> Interval:
    """Interval for sum(weights) / span from the rates of equal windows of [start, end]:
    each completion (end stamp) adds its weight to its window. The windows' mean rate is the
    run's figure exactly, as the windows are equal and cover the span."""
    n_done = len(ends_ns)
    k = min(WINDOWS, n_done // MIN_PER_WINDOW)
    if k < MIN_WINDOWS or end_ns <= start_ns:
        return Interval(None, None, "batch-means", max(k, 0), level)
    width_s = (end_ns - start_ns) / k / 1e9
    idx = np.minimum((np.asarray(ends_ns, dtype=np.float64) - start_ns) * k // (end_ns - start_ns), k - 1)
    per = np.bincount(np.clip(idx, 0, k - 1).astype(int), weights=np.asarray(weights, dtype=np.float64), minlength=k)
    t = repeats_ci(per / width_s, level)
    return Interval(t.low, t.high, "batch-means", k, level)


def _itl_mean(ok: list[RequestRecord], level: float) -> Interval:
    sums, counts = [], []
    for r in ok:
        if n := gap_count(r):  # per-request scalars: no gap of any request is listed (issue 20)
            sums.append(gap_sum_ns(r) / MS)
            counts.append(n)
    s, c = np.asarray(sums), np.asarray(counts, dtype=np.float64)
    iv = bootstrap_ci(np.arange(len(s), dtype=np.float64),
                      lambda m: s[m.astype(np.int64)].sum(axis=1) / c[m.astype(np.int64)].sum(axis=1), level)
    return Interval(iv.low, iv.high, "bootstrap", int(c.sum()), level)


def _per_request(ok: list[RequestRecord], out_tok: list[int]) -> dict[str, Sequence[float]]:
    return {
        "ttft_ms": [v / MS for r in ok if (v := ttft_ns(r)) is not None],
        "tpot_ms": [v / MS for r in ok if (v := tpot_ns(r)) is not None],
        "e2e_ms": [e2e_ns(r) / MS for r in ok],
        "ms_per_token": [e2e_ns(r) / MS / n for r, n in zip(ok, out_tok) if n > 0],
    }


def block(ok: Sequence[RequestRecord], start_ns: int, end_ns: int, level: float = LEVEL,
          done: Sequence[RequestRecord] | None = None, itl: ItlFigures | None = None) -> dict:
    """summary.json's `intervals`: {"level", "figures": {"ttft_ms.p99": {low, high, method, n}, ...}}.
    ok: the requests the latencies are of; done: the completions the rates count (default ok);
    itl: ok's ITL figures when the caller has them (metrics.summarize), else made here."""
    ok = list(ok)
    if itl is None or itl.level != level:
        itl = itl_figures(ok, level)
    done = ok if done is None else list(done)
    d_out = [output_tokens(r) for r in done]
    ends = [r.end_ns for r in done]
    figs: dict[str, dict] = {
        "request_throughput": figure(batch_means(ends, [1.0] * len(done), start_ns, end_ns, level)),
        "output_token_throughput": figure(batch_means(ends, d_out, start_ns, end_ns, level)),
        "total_token_throughput": figure(batch_means(
            ends, [o + input_tokens(r) for r, o in zip(done, d_out)], start_ns, end_ns, level)),
    }
    out_tok = [output_tokens(r) for r in ok]
    values = _per_request(ok, out_tok)
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token"):
        if name == "itl_ms":  # every gap: its order statistics come from the one sorted array
            figs["itl_ms.mean"] = figure(_itl_mean(ok, level))
            figs.update((f"itl_ms.p{p}", figure(itl.intervals[p])) for p in PERCENTILES)
            continue
        v = values[name]
        figs[f"{name}.mean"] = figure(bootstrap_ci(v, level=level))
        for p in PERCENTILES:
            figs[f"{name}.p{p}"] = figure(quantile_ci(v, p, level))
    return {"level": level, "figures": _finite(figs)}


def _finite(figs: dict[str, dict]) -> dict[str, dict]:
    """JSON has no NaN: a bound that could not be computed is null (open)."""
    for f in figs.values():
        for k in ("low", "high"):
            if f[k] is not None and not math.isfinite(f[k]):
                f[k] = None
    return figs
