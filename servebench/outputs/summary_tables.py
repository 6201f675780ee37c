"""The report's own tables beside the recommendation: every run, baseline comparison, and the
metadata needed to reproduce each number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from servebench.outputs.table import Table

RUN_COLUMNS = ["source", "config", "load_level", "status", "completed", "failed", "request_throughput",
               "output_token_throughput", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "itl_ms_p99", "e2e_ms_p50",
               "ms_per_token_p50", "usd_per_hour", "usd_per_1m", "usd_per_1m_total", "j_per_token"]
_KEY = ["mode", "concurrency", "rate", "speed", "input_tokens", "output_tokens"]


def runs_table(df: pd.DataFrame) -> Table:
    cols = [c for c in RUN_COLUMNS + (["goodput"] if "goodput" in df else []) if c in df]
    notes = [f"{r['config']} @ {r['load_level']}: {r['price_note']}" for _, r in df.iterrows() if isinstance(r.get("price_note"), str)]
    missing = sorted(df.loc[df["usd_per_hour"].isna() & (df["completed"].fillna(0) > 0), "config"].unique())
    notes += [f"no price for {c}: give --price NAME=USD_PER_HOUR" for c in missing]
    return Table("runs", "All runs", df[cols].reset_index(drop=True), notes)


def _same(a, b) -> bool:
    return (a is None or a != a) and (b is None or b != b) or a == b


def comparison_table(df: pd.DataFrame) -> Table | None:
    """Each other input against the baseline (the first DIR): the baseline run at the same load
    (mode, concurrency, rate, tokens); a baseline that is a single run is the reference for all."""
    if df["source"].nunique() < 2:
        return None
    base = df[df["baseline"]]
    rows, notes = [], []
    for _, r in df[~df["baseline"]].iterrows():
        match = base if len(base) == 1 else base[[all(_same(b[k], r[k]) for k in _KEY) for _, b in base.iterrows()]]
        if match.empty:
            notes.append(f"{r['source']} {r['config']} @ {r['load_level']}: no baseline run at the same load")
            continue
        same = match[match["config"] == r["config"]]  # the same configuration, when the baseline has it
        b = (same if len(same) else match).iloc[0]

        def pct(col: str) -> float:
            x, y = r.get(col), b.get(col)
            return (x / y - 1) * 100 if x == x and y == y and y and x is not None else np.nan

        rows.append({"source": r["source"], "config": r["config"], "load_level": r["load_level"],
                     "baseline": f"{b['source']}: {b['config']} @ {b['load_level']}",
                     "output_token_throughput": r["output_token_throughput"], "delta_throughput_pct": pct("output_token_throughput"),
                     "ms_per_token_p50": r["ms_per_token_p50"], "delta_latency_pct": pct("ms_per_token_p50"),
                     "usd_per_1m": r["usd_per_1m"], "delta_usd_per_1m_pct": pct("usd_per_1m")})
    name = base["source"].iloc[0] if len(base) else "?"
    return Table("comparison", f"Against the baseline ({name})", pd.DataFrame(rows), notes)


def metadata(df: pd.DataFrame) -> tuple[Table, dict[str, dict]]:
    """Per run: engine and version, host, GPUs, launcher, load; and its run.json for the HTML."""
    rows, full = [], {}
    for _, r in df.iterrows():
        run = {}
        if isinstance(r.get("run_dir"), str) and (Path(r["run_dir"]) / "run.json").exists():
            try:
                run = json.loads((Path(r["run_dir"]) / "run.json").read_text())
            except (OSError, json.JSONDecodeError):
                run = {}
        host = run.get("host") or {}
        gpus = host.get("gpus") or []
        names = sorted({g.get("name") or "?" for g in gpus})
        server = (run.get("cell") or {}).get("server") or {}
        info = (run.get("server") or {}).get("info") or {}
        rows.append({"source": r["source"], "cell": r["cell"], "engine": r.get("engine"),
                     "engine_version": (run.get("engine") or {}).get("version"), "hostname": host.get("hostname"),
                     "gpus": f"{len(gpus)}x " + ", ".join(names) if gpus else (host.get("gpus_unavailable") and "none") or "-",
                     "launcher": server.get("launcher") or (run.get("config") or {}).get("launcher"),
                     "command": info.get("command") or " ".join(server.get("server_args") or server.get("engine_args") or []) or None,
                     "run_dir": r.get("run_dir")})
        full[f"{r['source']}/{r['cell']}"] = {k: run.get(k) for k in ("config", "cell", "engine", "host", "server", "started_at", "servebench_version") if run.get(k) is not None}
    return Table("metadata", "Reproduction metadata", pd.DataFrame(rows)), full
