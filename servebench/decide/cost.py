"""Cost arithmetic (definitions: docs/decide.md). Pure functions of a price and a throughput.

The study's definitions, kept exactly: time to generate 1M tokens (minutes) = 1e6 / tok/s / 60;
cost of 1M tokens = $/h x minutes / 60, which is the same as ($/h) / (tok/s x 3600 / 1e6).
"""

from __future__ import annotations

import math

MILLION = 1e6


def _ok(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def minutes_per_million(tokens_per_s: float | None) -> float | None:
    """Minutes to generate 1M tokens at this throughput (None when nothing was generated)."""
    if not _ok(tokens_per_s) or tokens_per_s <= 0:
        return None
    return MILLION / tokens_per_s / 60.0


def usd_per_million(usd_per_hour: float | None, tokens_per_s: float | None) -> float | None:
    """$ per 1M tokens = ($/h) / (tok/s x 3600 / 1e6): the hour's price over the tokens it makes."""
    if not _ok(usd_per_hour) or not _ok(tokens_per_s) or tokens_per_s <= 0:
        return None
    return usd_per_hour / (tokens_per_s * 3600.0 / MILLION)


def joules_per_token(energy_j: float | None, tokens: float | None) -> float | None:
    """Measured energy (NVML counter over the window) / tokens generated in that window."""
    if not _ok(energy_j) or not _ok(tokens) or tokens <= 0:
        return None
    return energy_j / tokens


def servers_needed(target_rps: float, capacity_rps: float | None) -> int | None:
    """Whole servers to carry target_rps when one carries capacity_rps within the SLO."""
    if not _ok(capacity_rps) or capacity_rps <= 0:
        return None
    return max(1, math.ceil(target_rps / capacity_rps - 1e-9))
