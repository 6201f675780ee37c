"""Intervals in the run table and the tie rule of every table that picks a winner.

A headline column X of the run table gets X_ci_low / X_ci_high and the row says where they come
from in `ci`: "run" (the run's own summary.json `intervals` block: order-statistic, bootstrap or
batch-means by figure) or "repeats" (Student's t across the repeats merge_repeats averaged).
Two values differ only when their intervals do not overlap (analysis/intervals.overlap);
otherwise the tables say "tie" and by how much the intervals reach (docs/decide.md).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from servebench.analysis.intervals import repeats_ci
from servebench.analysis.ties import num

LATENCY = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token")
STATS = ("mean", "p50", "p90", "p95", "p99")
THROUGHPUT = ("request_throughput", "output_token_throughput", "total_token_throughput")
HEADLINE = THROUGHPUT + tuple(f"{m}_{s}" for m in LATENCY for s in STATS)


def figure_key(column: str) -> str:
    """Run-table column -> summary.json intervals key: ttft_ms_p99 -> ttft_ms.p99."""
    if column in THROUGHPUT:
        return column
    metric, _, stat = column.rpartition("_")
    return f"{metric}.{stat}"


def ci_columns(summary: dict) -> dict[str, Any]:
    """The run's own intervals as run-table columns; all None for a run stored without them."""
    figs = ((summary.get("intervals") or {}).get("figures")) or {}
    out: dict[str, Any] = {"ci": "run" if figs else None}
    for col in HEADLINE:
        f = figs.get(figure_key(col)) or {}
        out[f"{col}_ci_low"], out[f"{col}_ci_high"] = f.get("low"), f.get("high")
    return out


def add_repeat_cis(merged: pd.DataFrame, ok_rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Where a load point has 2+ repeats, its intervals are Student's t across them (method
    "repeats"), replacing the average of the runs' own intervals merge_repeats made."""
    merged = merged.copy()
    groups = list(ok_rows.groupby(keys, dropna=False, sort=False))
    for i, (_, g) in enumerate(groups):  # same groupby, same order as merged's rows
        if len(g) < 2:
            continue
        merged.loc[merged.index[i], "ci"] = "repeats"
        for col in HEADLINE:
            if col not in g:
                continue
            iv = repeats_ci([v for v in g[col] if num(v) is not None])
            merged.loc[merged.index[i], [f"{col}_ci_low", f"{col}_ci_high"]] = [iv.low, iv.high]
    return merged


def cost_cis(df: pd.DataFrame) -> pd.DataFrame:
    """$ per 1M output tokens falls as throughput rises: its interval is the price over the
    throughput interval's ends (the price itself is taken as exact)."""
    lo, hi = df.get("output_token_throughput_ci_low"), df.get("output_token_throughput_ci_high")
    if lo is None or hi is None or "usd_per_hour" not in df:
        return df

    def per(tps: pd.Series) -> pd.Series:
        tps = pd.to_numeric(tps, errors="coerce")
        return pd.to_numeric(df["usd_per_hour"], errors="coerce") / (tps.where(tps > 0) * 3600 / 1e6)  # 0 tok/s: no cost

    low, high = per(hi), per(lo)
    return df.assign(usd_per_1m_ci_low=low, usd_per_1m_ci_high=high)
