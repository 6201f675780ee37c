"""95 % confidence intervals for the headline figures: pure functions of samples.

Three methods, each named in what it returns so a report can say which one it used:
- `order-statistic` for a percentile of per-request values: the distribution-free interval
  between two order statistics whose ranks a Binomial(n, q) covers with the given level.
  Exact, no resampling, and honest at the tail: when n is too small for the upper rank to
  exist (p99 of 100 requests) the interval is open above and says so.
- `bootstrap` for a mean (or any statistic) over requests: percentile bootstrap with a fixed
  seed, so the same records always give the same interval.
- `repeats` across independent runs of one configuration: Student's t on the run values.
Why not bootstrap percentiles too: a bootstrap p99 from a few hundred requests is known to be
too narrow (it can never exceed the sample max), which is the over-precise answer the
capacity search must not give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0
_CHUNK = 4_000_000  # resample indices drawn at once (~32 MB of int64); fixes the seeded stream
_ROWS = 1 << 16  # resampled values gathered at once for `stat`
# two-sided 97.5 % Student t quantiles, df 1..30; beyond, _t's expansion (1.96 alone is ~4 % narrow at df 31)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True, slots=True)
class Interval:
    low: float | None
    high: float | None  # None: open above (too few samples for the upper rank)
    method: str  # order-statistic | bootstrap | repeats
    n: int
    level: float = LEVEL

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "method": self.method, "n": self.n,
                "level": self.level}


def _z(level: float) -> float:
    # inverse normal CDF by bisection on erf: no scipy needed, exact to 1e-9
    lo, hi, p = 0.0, 10.0, (1 + level) / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


def _t(level: float, df: int) -> float:
    # Cornish-Fisher expansion of Student's t around the normal quantile: within 0.2 % of the
    # table past df 10, within 1 % from df 5 (the normal quantile alone is ~4 % narrow at df 31)
    z = _z(level)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)


def _binom_ranks(n: int, q: float, level: float) -> tuple[int, int]:
    """0-based ranks (l, u) with P(l <= B <= u - 1) >= level, B ~ Binomial(n, q); u may be n
    (open above) or l may be -1 (open below)."""
    if n <= 3000:
        cdf, acc = [], 0.0
        for k in range(n + 1):
            acc += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                            + (k * math.log(q) if k else 0.0)
                            + ((n - k) * math.log1p(-q) if n - k else 0.0))
            cdf.append(acc)
        tail = (1 - level) / 2
        l = max((k for k in range(n + 1) if cdf[k] <= tail), default=-1)  # P(B <= l) <= tail
        u = min((k for k in range(n + 1) if cdf[k] >= 1 - tail), default=n)
        return l, u
    z, mu = _z(level), n * q
    sd = math.sqrt(n * q * (1 - q))
    l, u = math.floor(mu - z * sd), math.ceil(mu + z * sd)
    return (l if l >= 0 else -1), min(u, n)


def quantile_ci(values: Sequence[float], pct: float, level: float = LEVEL, *, presorted: bool = False) -> Interval:
    """Distribution-free interval for the pct-th percentile (pct in 0..100). presorted: the
    values are in ascending order already (a long run's ITL: no sorted copy, analysis/itl.py)."""
    a = np.asarray(values, dtype=np.float64) if presorted else np.sort(np.asarray(values, dtype=np.float64))
    return quantile_ci_at(int(a.size), pct, lambda k: float(a[k]), level)


def quantile_ranks(n: int, pct: float, level: float = LEVEL) -> tuple[int, int]:
    """The 0-based ranks (l, u) of quantile_ci's bounds among n sorted values; l may be -1
    (open below), u may be n (open above). For a caller that finds order statistics itself
    without sorting every value (analysis/select.py)."""
    if not 0 < pct < 100:
        raise ValueError(f"percentile {pct} outside (0, 100)")
    # X(l) <= quantile < X(u) (0-based) whenever l < B <= u, B ~ Binomial(n, q) the count of
    # samples below the quantile, which happens with probability F(u) - F(l) >= level
    return _binom_ranks(n, pct / 100.0, level)


def quantile_ci_at(n: int, pct: float, value_at: Callable[[int], float], level: float = LEVEL) -> Interval:
    """quantile_ci from the n values' order statistics: value_at(k) is the k-th smallest."""
    if n == 0:
        return Interval(None, None, "order-statistic", 0, level)
    l, u = quantile_ranks(n, pct, level)
    low = value_at(l) if l >= 0 else None
    high = value_at(u) if u < n else None
    return Interval(low, high, "order-statistic", n, level)


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], np.ndarray] | None = None,
                 level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Percentile bootstrap of `stat` (default: the mean along axis 1) over the samples.
    `stat` takes a (k, n) array of resamples and returns k values, each from its own row only
    (it is given a few rows at a time)."""
    a = np.asarray(values, dtype=np.float64)
    n = int(a.size)
    if n == 0:
        return Interval(None, None, "bootstrap", 0, level)
    stat = stat or (lambda m: m.mean(axis=1))
    rng = np.random.default_rng(seed)
    per, rows = max(1, _CHUNK // n), max(1, _ROWS // n)
    out: list[np.ndarray] = []
    for start in range(0, resamples, per):
        k = min(per, resamples - start)
        idx = rng.integers(0, n, size=(k, n))  # drawn per chunk as always: the seeded stream
        # the resampled values a few rows at a time: a stat is row by row, so the same values,
        # without the chunk's gathered copy and the stat's own (~64-96 MB at the post-load peak)
        out.extend(np.asarray(stat(a[idx[i:i + rows]]), dtype=np.float64) for i in range(0, k, rows))
        del idx
    draws = np.concatenate(out)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(lo), float(hi), "bootstrap", n, level)


def repeats_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval for the mean of independent repeats (n >= 2)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = int(a.size)
    if n < 2:
        return Interval(None, None, "repeats", n, level)
    t = _T975[n - 2] if level == LEVEL and n - 1 <= len(_T975) else _t(level, n - 1)
    half = t * float(a.std(ddof=1)) / math.sqrt(n)
    m = float(a.mean())
    # the mean of values none of which is negative (a rate, a latency) is not negative either:
    # a t-interval wide enough to reach below 0 is cut there, not read as "±1187 %"
    low = max(m - half, 0.0) if float(a.min()) >= 0 else m - half
    return Interval(low, m + half, "repeats", n, level)


def overlap(a: Interval, b: Interval) -> bool:
    """True when two intervals share any value: the difference is a tie at this level.
    An open end reaches infinitely far; an interval with no bounds at all is treated as
    unknown, which is a tie (nothing says the two differ)."""
    alo = -math.inf if a.low is None else a.low
    ahi = math.inf if a.high is None else a.high
    blo = -math.inf if b.low is None else b.low
    bhi = math.inf if b.high is None else b.high
    return alo <= bhi and blo <= ahi


def binomial_ci(k: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval for a share k/n (an error rate): unlike k/n +- z*se it stays
    inside [0, 1] and is not zero-width when no request failed."""
    if n <= 0:
        return Interval(None, None, "wilson", 0, level)
    z, p = _z(level), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (or n) the bound is exactly 0 (or 1); the formula leaves a rounding speck
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(low, high, "wilson", n, level)
