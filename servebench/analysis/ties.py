"""The tie rule of every table that picks a winner or says better/worse: two values differ only
when their 95 % intervals do not overlap (intervals.overlap); otherwise they tie, and the table
says how far the intervals reach ("tie (±6 %)"). Rows are run-table rows (a dict or a pandas
Series) carrying X_ci_low / X_ci_high beside a column X (decide/noise.py); docs/decide.md.
"""

from __future__ import annotations

import math

from servebench.analysis.intervals import Interval, overlap


def num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def interval(row, column: str) -> Interval | None:
    """The row's interval for a column, or None when it has none (an old run, a failed cell).
    A missing bound with the other present is an open end, as in the run's own block."""
    lo, hi = num(row.get(f"{column}_ci_low")), num(row.get(f"{column}_ci_high"))
    if lo is None and hi is None:
        return None
    return Interval(lo, hi, str(row.get("ci") or "run"), 0)


def reach_pct(ivs: list[Interval], ref: float) -> float | None:
    """How far the intervals reach from ref, in % of it (None: an open end or no ref)."""
    if not ref or any(iv.low is None or iv.high is None for iv in ivs):
        return None
    return max(max(abs(iv.high - ref), abs(ref - iv.low)) for iv in ivs) / abs(ref) * 100


def tie_text(ivs: list[Interval], ref: float) -> str:
    r = reach_pct(ivs, ref)
    return "tie (±?: an interval is open)" if r is None else f"tie (±{r:.0f} %)" if r >= 1 else f"tie (±{r:.1f} %)"


def tied(a_row, b_row, column: str) -> str | None:
    """'tie (±N %)' when both rows have intervals on column and they overlap; None when they
    do not overlap or an interval is missing (the caller falls back to the values)."""
    a, b = interval(a_row, column), interval(b_row, column)
    if a is None or b is None or not overlap(a, b):
        return None
    return tie_text([a, b], num(b_row.get(column)) or 0.0)
