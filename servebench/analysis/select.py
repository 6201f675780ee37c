"""Exact order statistics of a sample too large to hold at once (issue 20: a long run's ITL).

The sample is given as `batches`: a callable that yields the same float64 arrays each time it
is called (the gaps recomputed from stored stamps, a file read again), in any order. The ranks
wanted are known up front (a percentile's two neighbours, min, max, an interval's two order
statistics), so each is found by radix refinement on the values' bit patterns: keys that order
as the floats do, a histogram of the next 16 key bits per pass, and only the buckets holding a
wanted rank carried to the next pass, or collected and sorted once they hold few enough values.
No pass holds more than one batch plus CAP values (twice over while it sorts them). The figures are the same values numpy's
sort gives, bit for bit; mean and std are exactly rounded sums (math.fsum), so they may differ
from numpy's pairwise sums in the last bits, never by the values' order (docs/metrics.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from servebench.analysis.per_request import PERCENTILES

Batches = Callable[[], Iterable[np.ndarray]]
CAP = 1 << 20  # values collected at once in a pass (8 MB)
_DIGIT = 16  # key bits resolved per pass: 64-bit keys take at most 4 passes after the first
_SIGN = np.uint64(1 << 63)


def keys(a: np.ndarray) -> np.ndarray:
    """uint64 keys that sort as the float64 values do (negatives: every bit flipped; others:
    the sign bit set). -0.0 sorts just below 0.0, which np.sort treats as equal."""
    b = np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)
    return np.where(b & _SIGN, ~b, b | _SIGN)


def _value(key: int) -> float:
    k = np.uint64(key)
    b = k & ~_SIGN if k & _SIGN else ~k
    return float(np.array([b], dtype=np.uint64).view(np.float64)[0])


class _Group:
    """Values whose key starts with `prefix` (its top 64 - shift bits); `below` values sort
    before them; `ranks` are the wanted ranks among all values that fall in it."""

    __slots__ = ("prefix", "shift", "below", "count", "ranks", "hist", "got")

    def __init__(self, prefix: int, shift: int, below: int, count: int, ranks: list[int]) -> None:
        self.prefix, self.shift, self.below, self.count, self.ranks = prefix, shift, below, count, ranks
        self.hist: np.ndarray | None = None
        self.got: list[np.ndarray] = []


def order_statistics(batches: Batches, n: int, ranks: Iterable[int], cap: int = CAP) -> dict[int, float]:
    """{rank: the rank-th smallest value (0-based)} of the n values `batches` yields."""
    wanted = sorted({int(r) for r in ranks})
    if not wanted:
        return {}
    if wanted[0] < 0 or wanted[-1] >= n:
        raise ValueError(f"ranks {wanted[0]}..{wanted[-1]} outside 0..{n - 1}")
    out: dict[int, float] = {}
    groups = [_Group(0, 64, 0, n, wanted)]
    while groups:
        collect = [g for g in groups if g.count <= max(1, cap // len(groups))]
        _pass(batches, groups, collect)
        nxt: list[_Group] = []
        for g in groups:
            seen = sum(a.size for a in g.got) if g in collect else int(g.hist.sum())
            if seen != g.count:  # batches that change between calls: no rank would be right
                raise ValueError(f"order_statistics: {seen} values where the last pass counted {g.count}")
            if g in collect:
                v = np.sort(np.concatenate(g.got)) if g.got else np.empty(0)
                out.update((r, float(v[r - g.below])) for r in g.ranks)
            else:
                nxt += _split(g, out)
        groups = nxt
    return out


def _pass(batches: Batches, groups: list[_Group], collect: list[_Group]) -> None:
    """One read of every value: each group's next-digit histogram, or its values collected."""
    shift = groups[0].shift  # every group is refined in step: one shift per pass
    for g in groups:
        if g not in collect:
            g.hist = np.zeros(1 << _DIGIT, dtype=np.int64)
    prefixes = np.array([g.prefix for g in groups], dtype=np.uint64)
    for a in batches():
        if not len(a):
            continue
        k = keys(a)
        top = k >> np.uint64(shift) if shift < 64 else None  # shift 64: the first pass, one group of all
        for g, p in zip(groups, prefixes):
            m = None if top is None else top == p
            sub = k if m is None else k[m]
            if not sub.size:
                continue
            if g in collect:
                g.got.append(np.array(a if m is None else a[m], dtype=np.float64))
            else:
                digit = (sub >> np.uint64(shift - _DIGIT)) & np.uint64((1 << _DIGIT) - 1)
                g.hist += np.bincount(digit.astype(np.int64), minlength=1 << _DIGIT)


def _split(g: _Group, out: dict[int, float]) -> list[_Group]:
    """The sub-buckets of g that hold its wanted ranks; a bucket with every key bit fixed
    holds one value only, so its ranks are answered at once."""
    cum = np.cumsum(g.hist)
    shift = g.shift - _DIGIT
    found: dict[int, _Group] = {}
    for r in g.ranks:
        d = int(np.searchsorted(cum, r - g.below, side="right"))
        below = g.below + (int(cum[d - 1]) if d else 0)
        prefix = (g.prefix << _DIGIT) | d
        if shift == 0:
            out[r] = _value(prefix)
            continue
        if d not in found:
            found[d] = _Group(prefix, shift, below, int(g.hist[d]), [])
        found[d].ranks.append(r)
    return list(found.values())


def percentile_ranks(n: int, pcts: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.percentile's linear method for n values: (lower ranks, upper ranks, weights), the
    same float64 steps numpy 2 takes (virtual index (n - 1) * p / 100, clipped to the last)."""
    q = np.true_divide(np.asarray(pcts), np.float64(100))
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    gamma = virtual - np.where(above, -1, prev)  # numpy's index -1 there: both neighbours are the last
    return prev.astype(np.int64), nxt.astype(np.int64), gamma


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own interpolation between neighbours (a + (b - a) t, from b's side past 0.5)."""
    diff = np.subtract(b, a)
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def percentiles(n: int, pcts: Sequence[float], value_at: Callable[[int], float]) -> list[float]:
    """np.percentile(values, pcts) from the values' order statistics (value_at(k): k-th smallest)."""
    lo, hi, gamma = percentile_ranks(n, pcts)
    a = np.array([value_at(int(k)) for k in lo], dtype=np.float64)
    b = np.array([value_at(int(k)) for k in hi], dtype=np.float64)
    return [float(v) for v in lerp(a, b, gamma)]


_KEYS = tuple(f"p{p}" for p in PERCENTILES)  # metrics.dist's, in its key order


def dist(batches: Batches, n: int, more: Iterable[int] = ()) -> tuple[dict[str, float | None], Callable[[int], float]]:
    """metrics.dist of the n values (the same keys, in the same order), and value_at(rank) for
    the ranks in `more` (an interval's order statistics) besides those dist reads."""
    if n == 0:
        return {k: None for k in ("mean", *_KEYS, "min", "max", "std", "n")}, lambda k: float("nan")
    lo, hi, _ = percentile_ranks(n, PERCENTILES)
    at = order_statistics(batches, n, [0, n - 1, *lo, *hi, *more]).__getitem__
    mean, std = moments(batches, n)
    out: dict[str, float | None] = {"mean": mean}
    out.update(zip(_KEYS, percentiles(n, PERCENTILES, at)))
    out.update(min=at(0), max=at(n - 1), std=std, n=n)
    return out, at


def moments(batches: Batches, n: int) -> tuple[float, float]:
    """(mean, std) of the n values, each from an exactly rounded sum: the same whatever the
    batches' order (np.mean / np.std sum pairwise: they may differ in the last bits)."""
    mean = math.fsum(_floats(batches())) / n
    sq = math.fsum(_floats(np.square(np.asarray(a, dtype=np.float64) - mean) for a in batches()))
    return mean, math.sqrt(sq / n)


_FLOATS = 1 << 16  # values made Python floats at once for fsum (~2 MB; a 1M-value list was 32 MB)


def _floats(arrays: Iterable[np.ndarray]) -> Iterable[float]:
    for a in arrays:  # one fsum over every value: its result does not depend on how they are cut
        for i in range(0, len(a), _FLOATS):
            yield from a[i:i + _FLOATS].tolist()
