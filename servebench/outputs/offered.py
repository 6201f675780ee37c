"""Timeline panels for an open loop (a trace, --rate): the load the schedule offered, per
second, beside latency by send time, so a reader sees which burst broke the SLO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from servebench.outputs.panels import Panel, Series


def _bins(rel_s: np.ndarray, end_s: float) -> np.ndarray:
    lo = min(0.0, float(rel_s.min())) if rel_s.size else 0.0
    edges = np.arange(lo, max(end_s, lo + 1e-9), 1.0)
    return np.append(edges, end_s) if edges[-1] < end_s else edges


def panels(run_dir: Path, meas: pd.DataFrame, t0: int) -> list[Panel]:
    """[offered requests/s, offered prompt tokens/s, TTFT by send second], or [] when the run
    was not released on a schedule (no "schedule" in summary.json)."""
    try:
        if not json.loads((Path(run_dir) / "summary.json").read_text()).get("schedule"):
            return []
    except (OSError, ValueError):
        return []
    sched = meas[meas["scheduled_ns"] > 0]
    rel = (sched["scheduled_ns"].to_numpy(np.int64) - t0) / 1e9
    end = max(float(rel.max()) if rel.size else 0.0, (int(meas["end_ns"].max()) - t0) / 1e9)
    edges = _bins(rel, end)
    width = np.diff(edges)
    n, _ = np.histogram(rel, bins=edges)
    toks, _ = np.histogram(rel, bins=edges, weights=sched["input_tokens"].to_numpy(float))
    step = lambda v: np.append(v, v[-1])  # noqa: E731 - a step plot draws the last bin too
    offered = Panel("Offered load (scheduled, 1 s bins)", "requests/s", [Series("requests/s", edges, step(n / width), step=True)], "offered")
    tokens = Panel("Offered prompt tokens/s (1 s bins)", "tokens/s", [Series("prompt tokens/s", edges, step(toks / width), step=True)], "offered prompt")
    first = meas["first_token_ns"].to_numpy(np.int64)  # 0: no token (plots.build reads them a batch at a time)
    ttft = np.where(first > 0, (first - meas["sent_ns"].to_numpy(np.int64)) / 1e6, np.nan)
    sent = (meas["sent_ns"].to_numpy(np.int64) - t0) / 1e9
    idx = np.clip(np.searchsorted(edges, sent, side="right") - 1, 0, len(width) - 1)
    worst = np.full(len(width), np.nan)
    for i, v in zip(idx, ttft):
        if not np.isnan(v):
            worst[i] = v if np.isnan(worst[i]) else max(worst[i], v)
    lat = Panel("TTFT by send time (worst per 1 s bin)", "ms", [Series("TTFT max", edges, step(worst), step=True)], "TTFT")
    return [offered, tokens, lat]
