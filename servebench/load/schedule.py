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


def split_plan(indices: list[int], offsets: list[int] | None, concurrency: int | None, workers: int):
    """Split one global plan across worker processes so the whole still honours it: requests
    round-robin (keeping each one's global release time), concurrency divided as evenly as
    possible. Returns [(indices, offsets_or_None, concurrency_or_None)] per worker."""
    workers = max(1, min(workers, len(indices), concurrency or len(indices)))
    parts = []
    for w in range(workers):
        idx = indices[w::workers]
        offs = offsets[w::workers] if offsets is not None else None
        conc = None if concurrency is None else concurrency // workers + (1 if w < concurrency % workers else 0)
        parts.append((idx, offs, conc))
    return parts
