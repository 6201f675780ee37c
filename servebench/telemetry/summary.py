"""Window arithmetic shared by the samplers: means, peaks and counter differences.

All times are perf_counter_ns. The window is the measured load: first request sent to last
request finished. Samples are discrete, so each function states how it treats the edges.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _clean(ts: Sequence[int], vs: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(ts, dtype=np.int64)
    v = np.asarray([np.nan if x is None else float(x) for x in vs], dtype=np.float64)
    keep = ~np.isnan(v)
    return t[keep], v[keep]


Window = tuple[int, int]


def window_values(ts: Sequence[int], vs: Sequence[float | None], window: Window | None) -> np.ndarray:
    """Values of samples taken inside [start, end] (all samples when there is no window)."""
    t, v = _clean(ts, vs)
    if window is not None:
        v = v[(t >= window[0]) & (t <= window[1])]
    return v


def mean_in(ts, vs, window) -> float | None:
    v = window_values(ts, vs, window)
    return float(v.mean()) if v.size else None


def peak_in(ts, vs, window) -> float | None:
    v = window_values(ts, vs, window)
    return float(v.max()) if v.size else None


def interp_at(ts: Sequence[int], vs: Sequence[float | None], at_ns: int) -> float | None:
    """A monotonic counter's value at `at_ns`, linear between the two samples around it.

    None when `at_ns` lies outside the sampled span: extrapolating a counter would invent
    energy or tokens that were never read.
    """
    t, v = _clean(ts, vs)
    if t.size == 0 or at_ns < t[0] or at_ns > t[-1]:
        return None
    i = int(np.searchsorted(t, at_ns, side="left"))
    if t[i] == at_ns:
        return float(v[i])
    t0, t1, v0, v1 = t[i - 1], t[i], v[i - 1], v[i]
    return float(v0 + (v1 - v0) * (at_ns - t0) / (t1 - t0))


def interp_delta(ts, vs, window: tuple[int, int]) -> float | None:
    a, b = interp_at(ts, vs, window[0]), interp_at(ts, vs, window[1])
    return None if a is None or b is None else b - a


def bracket_delta(
    read_before: Sequence[int], read_after: Sequence[int], vs: Sequence[float | None], window: tuple[int, int]
) -> dict[str, Any] | None:
    """Counter difference between the last read that finished before the window and the
    first read that started after it, so the delta covers the whole window (and possibly a
    little around it: `slack_before_s`/`slack_after_s` say how much).

    `read_before[i]`/`read_after[i]`: when read i was certainly not yet / certainly already
    taken (for an HTTP scrape: send and receive stamps).
    """
    idx = [i for i, x in enumerate(vs) if x is not None]
    before = [i for i in idx if read_after[i] <= window[0]]
    after = [i for i in idx if read_before[i] >= window[1]]
    if not before or not after:
        return None
    i, j = before[-1], after[0]
    # summed read to read, as PromQL's increase(): a counter that went down restarted from 0
    # (the server restarted), so the read after the drop is all that was counted since
    delta, resets, prev = 0.0, 0, float(vs[i])
    for k in (k for k in idx if i < k <= j):
        v = float(vs[k])
        resets += v < prev
        delta += v if v < prev else v - prev
        prev = v
    return {
        "delta": delta,
        "slack_before_s": (window[0] - read_before[i]) / 1e9,
        "slack_after_s": (read_after[j] - window[1]) / 1e9,
    } | ({"resets": resets} if resets else {})


def headline(parts: list[tuple[str, float | None, str]]) -> str:
    """One line for the console report: "label value" pairs, skipping what is unknown."""
    return ", ".join(f"{label} {format(v, fmt)}".strip() for label, v, fmt in parts if v is not None)


def finite(x: float | None, ndigits: int = 6) -> float | None:
    """Round for JSON; NaN/inf become None (JSON has no NaN)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), ndigits)


def finalize(telemetry: dict[str, Any], output_tokens: int | None) -> dict[str, Any]:
    """Add energy per output token once the client has counted the output tokens.

    Accepts the whole telemetry dict ({sampler name: summary}) or the GPU summary alone;
    returns a new dict. joules_per_output_token = window energy (J, from the NVML counter)
    / output tokens received in the window, for the total and for each GPU.
    """
    if "gpu" in telemetry and isinstance(telemetry["gpu"], dict):
        return {**telemetry, "gpu": finalize(telemetry["gpu"], output_tokens)}
    out = dict(telemetry)
    if not out.get("available") or not output_tokens or output_tokens <= 0:
        return out
    out["output_tokens"] = int(output_tokens)

    def per_token(d: dict[str, Any]) -> dict[str, Any]:
        e = d.get("energy_j")
        return {**d, "joules_per_output_token": finite(e / output_tokens) if e is not None else None}

    if isinstance(out.get("total"), dict):
        out["total"] = per_token(out["total"])
        jpt = out["total"]["joules_per_output_token"]
        if jpt is not None and out.get("headline"):
            out["headline"] += f", J/output token {jpt:.4g}"
    if isinstance(out.get("gpus"), list):
        out["gpus"] = [per_token(g) for g in out["gpus"]]
    return out
