"""When each request is released. Pure: offsets from t0, decided before the run."""

from __future__ import annotations

import random

from servebench.config import LoadConfig


def release_offsets_ns(load: LoadConfig, n: int, workload=None) -> list[int] | None:
    """Offsets (ns after t0) at which requests 0..n-1 are released, or None for a closed loop
    (fixed concurrency: a request is released when a slot frees).

    A trace (workload.offsets_ns): each request at its trace time. burst: every request at 0. rate: Poisson (exponential gaps, seeded) or constant gaps; the
    first request goes at 0 so the measured window starts with load.
    """
    if getattr(workload, "offsets_ns", None) is not None:
        return workload.offsets_ns[:n]
    if load.mode == "concurrency":
        return None
    if load.mode == "burst":
        return [0] * n
    rate = float(load.rate)  # type: ignore[arg-type]
    if load.arrival == "constant":
        return [round(i * 1e9 / rate) for i in range(n)]
    rng = random.Random(load.seed)
    t, out = 0.0, []
    for i in range(n):
        out.append(round(t * 1e9))
        t += rng.expovariate(rate)
    return out


def trace_offsets_ns(times_s: list[float], speed: float = 1.0) -> list[int]:
    """Trace times (seconds from the replay's time zero, non-decreasing) -> release offsets,
    time compressed `speed`-fold. Rounded once, from the float seconds, so no drift adds up."""
    return [round(t * 1e9 / speed) for t in times_s]


def most_released_within(offsets_ns: list[int], span_ns: int) -> int:
    """The most releases in any stretch of span_ns (offsets sorted): a trace's busiest moment,
    an upper bound on requests in flight when each lasts at most span_ns."""
    best, lo = 0, 0
    for hi, t in enumerate(offsets_ns):
        while t - offsets_ns[lo] > span_ns:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def workers_used(requests: int, concurrency: int | None, workers: int) -> int:
    """No more workers than requests, nor than slots: each has at least one of both."""
    return max(1, min(workers, requests, concurrency or requests))


def split_plan(indices: list[int], offsets: list[int] | None, concurrency: int | None, workers: int):
    """Split one global plan across worker processes so the whole still honours it: concurrency
    divided as evenly as possible, and requests dealt in proportion to each worker's slots
    (keeping each one's global release time). Each worker works through its own share, so a
    worker with 1 slot of 3 dealt half the requests would leave one in flight, not three, for
    the second half of the run. Returns [(indices, offsets_or_None, concurrency_or_None)] per worker."""
    workers = workers_used(len(indices), concurrency, workers)
    concs = [None if concurrency is None else concurrency // workers + (1 if w < concurrency % workers else 0)
             for w in range(workers)]
    owner = _dealing([c or 1 for c in concs])
    mine: list[list[int]] = [[] for _ in range(workers)]
    for k in range(len(indices)):
        mine[owner[k % len(owner)]].append(k)
    return [([indices[k] for k in ks], None if offsets is None else [offsets[k] for k in ks], c)
            for ks, c in zip(mine, concs)]


def _dealing(weights: list[int]) -> list[int]:
    """One cycle of a smooth weighted round-robin: worker w gets weights[w] of every sum(weights)
    requests, spread out (equal weights: 0, 1, 2, ... as plain round-robin)."""
    total, got, out = sum(weights), [0] * len(weights), []
    for k in range(total):
        w = max(range(len(weights)), key=lambda w: (weights[w] * (k + 1) / total - got[w], -w))
        got[w] += 1
        out.append(w)
    return out
