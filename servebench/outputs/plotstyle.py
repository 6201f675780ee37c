"""How a report draws, shared by all its figures so that a configuration looks the same
everywhere: one colour per configuration (a source, when several are compared, changes the
marker and dash, never the colour), short load-level labels, log axes with 1-2-5 ticks that
read as plain numbers, and 95 % interval bars from `<column>_ci_low` / `<column>_ci_high`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

# Tableau 10 first (distinct in print and for the common colour-vision deficiencies), then
# darker companions for big reports; a configuration keeps its colour however many there are.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f4e79", "#a0522d", "#8b1a1a", "#2f6f6a", "#2e5e1e", "#8c7a1a",
           "#5e3c58", "#b5476b", "#5a4030", "#6b6b6b")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
FRONT_COLOURS = ("#222222", "#7a7a7a", "#4b0082", "#8b4513", "#006400", "#00008b")
# Above this max/min ratio a linear axis squeezes the small values into a line: go log.
LOG_SPAN = 20.0


def colour_map(configs: Iterable[str]) -> dict[str, str]:
    """configuration -> colour, in sorted order so the same set always maps the same way."""
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted({str(c) for c in configs}))}


def index_map(keys: Iterable[str], styles: tuple[str, ...]) -> dict[str, str]:
    """key -> style (marker symbol, dash), in first-seen order."""
    seen = list(dict.fromkeys(str(k) for k in keys))
    return {k: styles[i % len(styles)] for i, k in enumerate(seen)}


def short_level(level) -> str:
    """The label a point carries on a curve: `c=4` for 4 concurrent, else the level as named."""
    text = str(level)
    m = re.fullmatch(r"(\d+(?:\.\d+)?) concurrent", text)
    return f"c={m.group(1)}" if m else text


def tick_text(x: float, prefix: str = "") -> str:
    if x >= 1e6:
        return f"{prefix}{x / 1e6:g}M"
    if x >= 1e3:
        return f"{prefix}{x / 1e3:g}k"
    return f"{prefix}{x:g}"


def log_ticks(lo: float, hi: float, prefix: str = "") -> tuple[list[float], list[str]]:
    """1-2-5 ticks covering [lo, hi] as plain numbers (plotly's own log ticks print `2 5 100 2 5`);
    only the decades when 1-2-5 would crowd the axis."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    vals = [m * 10.0**e for e in range(first, last + 1) for m in (1, 2, 5)]
    vals = [v for v in vals if lo / 2.5 <= v <= hi * 2.5]
    if len(vals) > 12:
        vals = [v for v in vals if math.isclose(v, 10 ** round(math.log10(v)))]
    return vals, [tick_text(v, prefix) for v in vals]


def axis(values: Iterable[float], title: str, prefix: str = "") -> dict:
    """Axis settings: log with readable ticks when the values span more than LOG_SPAN, else
    linear from zero (everything a report plots is non-negative)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > LOG_SPAN:
        vals, text = log_ticks(float(v.min()), float(v.max()), prefix)
        return dict(title_text=title + ", log scale", type="log", tickvals=vals, ticktext=text)
    return dict(title_text=title, type="linear", rangemode="tozero", tickprefix=prefix)


def ci_columns(col: str) -> tuple[str, str]:
    return f"{col}_ci_low", f"{col}_ci_high"


def has_ci(df: pd.DataFrame, col: str) -> bool:
    """The table carries an interval for `col` on at least one row."""
    lo, hi = ci_columns(col)
    if lo not in df or hi not in df:
        return False
    return bool(pd.to_numeric(df[lo], errors="coerce").notna().any()
                or pd.to_numeric(df[hi], errors="coerce").notna().any())


def error_bars(g: pd.DataFrame, col: str, colour: str) -> dict | None:
    """Plotly error bars for `col` from its interval columns, or None when the rows carry none.
    A missing end (an interval open above: too few requests for its upper rank) draws no arm
    on that side."""
    if not has_ci(g, col):
        return None
    lo, hi = ci_columns(col)
    v = pd.to_numeric(g[col], errors="coerce").to_numpy(float)
    plus = pd.to_numeric(g[hi], errors="coerce").to_numpy(float) - v
    minus = v - pd.to_numeric(g[lo], errors="coerce").to_numpy(float)
    return dict(type="data", symmetric=False, array=np.where(np.isfinite(plus), np.maximum(plus, 0), np.nan),
                arrayminus=np.where(np.isfinite(minus), np.maximum(minus, 0), np.nan),
                color=colour, thickness=1.3, width=4, visible=True)


def ci_values(df: pd.DataFrame, col: str) -> list[float]:
    """The column with its interval ends, for sizing an axis so that no bar is cut."""
    out = pd.to_numeric(df[col], errors="coerce").tolist() if col in df else []
    for c in ci_columns(col):
        if c in df:
            out += pd.to_numeric(df[c], errors="coerce").tolist()
    return out
