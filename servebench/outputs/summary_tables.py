"""The report's own tables beside the recommendation: every run, baseline comparison, and the
metadata needed to reproduce each number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from servebench.analysis import ties
from servebench.outputs.table import Table

RUN_COLUMNS = ["source", "config", "load_level", "status", "completed", "failed", "request_throughput",
               "output_token_throughput", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "itl_ms_p99", "e2e_ms_p50",
               "ms_per_token_p50", "usd_per_hour", "usd_per_1m", "usd_per_1m_total", "j_per_token"]


def runs_table(df: pd.DataFrame) -> Table:
    cols = [c for c in RUN_COLUMNS + (["goodput"] if "goodput" in df else []) if c in df]
    notes = [f"{r['config']} @ {r['load_level']}: {r['price_note']}" for _, r in df.iterrows() if isinstance(r.get("price_note"), str)]
    missing = sorted(df.loc[df["usd_per_hour"].isna() & (df["completed"].fillna(0) > 0), "config"].unique())
    notes += [f"no price for {c}: give --price NAME=USD_PER_HOUR" for c in missing]
    return Table("runs", "All runs", df[cols].reset_index(drop=True), notes)


def _same(a, b) -> bool:
    return (a is None or a != a) and (b is None or b != b) or a == b


# What must match for two runs to be compared: a burst's size is its load.
_LOAD = ["mode", "concurrency", "rate", "speed", "requests"]  # speed: a trace replayed K times faster
_TOKENS = ["input_tokens", "output_tokens"]
# metric, lower is better, heading word
DELTAS = (("output_token_throughput", False, "throughput"), ("ms_per_token_p50", True, "latency"),
          ("usd_per_1m", True, "$ per 1M"))


def _load_same(a, b) -> bool:
    keys = _LOAD if a.get("mode") == "burst" or b.get("mode") == "burst" else _LOAD[:-1]
    return all(_same(a.get(k), b.get(k)) for k in keys)


def _mismatch(r, b) -> str:
    """'' when r and b ran the same load; else what differs, in the reader's words."""
    why = []
    if not _load_same(r, b):
        why.append(f"load {r['load_level']} vs {b['load_level']}")
    if not all(_same(r.get(k), b.get(k)) for k in _TOKENS):
        tok = lambda x: f"{x.get('input_tokens')}/{x.get('output_tokens')}"  # noqa: E731
        why.append(f"tokens in/out {tok(r)} vs {tok(b)}")
    if bool(r.get("steady_state")) != bool(b.get("steady_state")):  # a throughput over another window
        span = lambda x: "steady-state window" if x.get("steady_state") else "whole run"  # noqa: E731
        why.append(f"measured over {span(r)} vs {span(b)}")
    return "; ".join(why)


def _verdict(deltas: dict[str, float], tie: dict[str, str | None]) -> str:
    """better / worse only where the intervals do not overlap; else a tie and its reach."""
    real = {c: d for c, d in deltas.items() if d == d and d != 0 and not tie.get(c)}
    better = [w for c, lo, w in DELTAS if c in real and (real[c] < 0) == lo]
    worse = [w for c, lo, w in DELTAS if c in real and (real[c] < 0) != lo]
    tied = [f"{w} {tie[c][4:]}" for c, _, w in DELTAS if tie.get(c) and deltas[c] == deltas[c]]
    return "; ".join(x for x in (("better: " + ", ".join(better)) if better else "",
                                 ("worse: " + ", ".join(worse)) if worse else "",
                                 ("tie: " + ", ".join(tied)) if tied else "") if x) or "-"


def _not_complete(x) -> str:
    """Why a run's figures cover only part of its load ('' when complete): such a run is listed,
    never compared, as the ranking never ranks it."""
    st = x.get("status")
    if st in (None, "complete") or st != st:
        return ""
    failed, done = x.get("failed"), x.get("completed")
    n = f" ({failed:.0f} of {failed + done:.0f} requests failed)" if failed == failed and done == done and failed else ""
    return f"{x['source']} {x['config']} {st}{n}"


def _compare_row(r, b) -> dict:
    mismatch = _not_complete(r) or _not_complete(b) or _mismatch(r, b)

    def pct(col: str) -> float:
        x, y = r.get(col), b.get(col)
        ok = not mismatch and x is not None and y is not None and x == x and y == y and y
        return (x / y - 1) * 100 if ok else np.nan

    deltas = {c: pct(c) for c, _, _ in DELTAS}
    tie = {c: ties.tied(r, b, c) for c, _, _ in DELTAS}  # intervals overlap: no winner (analysis/ties.py)
    return {"source": r["source"], "config": r["config"], "load_level": r["load_level"],
            "baseline": f"{b['source']}: {b['config']} @ {b['load_level']}",
            "comparable": f"no: {mismatch}" if mismatch else "yes",
            "output_token_throughput": r["output_token_throughput"], "delta_throughput_pct": deltas["output_token_throughput"],
            "ms_per_token_p50": r["ms_per_token_p50"], "delta_latency_pct": deltas["ms_per_token_p50"],
            "usd_per_1m": r["usd_per_1m"], "delta_usd_per_1m_pct": deltas["usd_per_1m"],
            "verdict": _verdict(deltas, tie) if not mismatch else "-"}


def comparison_table(df: pd.DataFrame) -> Table | None:
    """Each other input against the baseline (the first DIR), level by level: the baseline run at
    the same load (mode, concurrency, rate, a burst's size) and token lengths. Where the baseline
    has no such run, the row names the one it has and what differs, and gives no difference."""
    base = df[df["baseline"]]
    if df["source"].nunique() < 2 or base.empty or bool(df["baseline"].all()):
        return None
    rows, notes = [], []
    for _, r in df[~df["baseline"]].iterrows():
        if r.get("status") == "skipped":
            continue
        match = base[[not _mismatch(r, b) for _, b in base.iterrows()]]
        pool = match if len(match) else base
        same = pool[pool["config"] == r["config"]]  # the same configuration, when the baseline has it
        b = (same if len(same) else pool).iloc[0]
        rows.append(_compare_row(r, b))
        if match.empty:
            notes.append(f"{r['source']} {r['config']} @ {r['load_level']}: no baseline run at the same load "
                         f"and token lengths ({_mismatch(r, b)}): not compared")
    notes.append("differences in % of the baseline: throughput higher is better; latency and $ per 1M lower are better; "
                 "a difference whose 95 % intervals overlap is a tie (±: how far the intervals reach)")
    name = base["source"].iloc[0]
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
