"""A named table with notes: what recommend and report produce and every format renders."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd


@dataclass
class Table:
    key: str  # stable id (csv 'table' column, html anchors)
    title: str
    df: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # stated, never hidden: ties, missing prices, misses


# Column headings in the study's words; the frames keep short names.
HEADINGS = {
    "source": "source", "model": "model", "quantization": "quantization", "where": "instance / hardware",
    "config": "configuration", "load_level": "load", "concurrency": "concurrent requests",
    "ms_per_token_p50": "latency ms/token (median)", "output_token_throughput": "throughput tok/s",
    "usd_per_hour": "$/h", "min_per_1m": "minutes per 1M tokens", "usd_per_1m": "$ per 1M tokens",
    "usd_per_1m_total": "$ per 1M total tokens", "j_per_token": "J per output token",
    "ttft_ms_p50": "TTFT p50 ms", "ttft_ms_p95": "TTFT p95 ms", "ttft_ms_p99": "TTFT p99 ms",
    "tpot_ms_p50": "TPOT p50 ms", "itl_ms_p99": "ITL p99 ms", "e2e_ms_p50": "E2E p50 ms",
    "request_throughput": "req/s", "error_rate": "error rate", "goodput": "goodput share",
    "goodput_rps": "goodput req/s", "status": "status", "error": "error", "price_source": "price source",
    "tput_per_gpu": "tok/s per GPU", "tput_per_user": "tok/s per user", "devices": "GPUs used",
    "capacity_rps": "req/s per server", "servers": "servers", "usd_per_month": "$/month",
    "cell": "cell", "completed": "completed", "failed": "failed", "engine_version": "engine version",
    "delta_throughput_pct": "throughput vs baseline % (higher is better)",
    "delta_latency_pct": "latency vs baseline % (lower is better)",
    "delta_usd_per_1m_pct": "$ per 1M vs baseline % (lower is better)", "met_slo": "met SLO",
    "comparable": "same load as baseline", "verdict": "vs baseline", "vs_next": "vs next best",
    "trace_rps": "trace req/s (x1)", "limit_speed": "limit (x trace rate, lower end)", "limit_range": "limit range", "first_missing": "first missing",
    "margin": "margin", "binding": "binds first", "slo": "SLO", "by": "searched",
    "limit_low": "lower end (a plan counts on it)", "limit_high": "upper end", "assumption": "assumed (not stated by the study)",
}


def heading(col: str) -> str:
    return HEADINGS.get(col, col)


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return f"{int(v):,}"
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:,.2f}" if a >= 0.995 else (f"{v:.4f}" if a >= 1e-3 else f"{v:.3g}")
    return str(v)


def _number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def column_format(values) -> Callable[[object], str]:
    """One number format for a whole column, so that 0.10 stands beside 1.52 (not 0.1000):
    whole numbers as integers; else enough decimals (at least 2) to give the column's smallest
    non-zero value two significant digits. Text and missing values as fmt() gives them."""
    nums = [float(v) for v in values if _number(v)]
    if not nums:
        return fmt
    if all(x.is_integer() for x in nums) and max(abs(x) for x in nums) < 1e15:
        return lambda v: f"{int(v):,}" if _number(v) else fmt(v)
    small = min((abs(x) for x in nums if x != 0), default=1.0)
    dec = 2 if small >= 0.995 else min(8, max(2, 1 - math.floor(math.log10(small))))
    return lambda v: f"{float(v):,.{dec}f}" if _number(v) else fmt(v)


def cells(df: pd.DataFrame) -> list[list[str]]:
    """The table's text, row by row, each column in its own single format."""
    fmts = [column_format(df[c].tolist()) for c in df.columns]
    return [[f(v) for f, v in zip(fmts, row)] for row in df.itertuples(index=False, name=None)]
