"""A capacity plan from a trace: the highest speed of a trace replay at which one server met the
SLO (`sweep --max-load-under` on a trace load, index.json's group `limit`), turned into the
servers that carry G times the trace's traffic, priced. The search answers a range as wide as
the noise (docs/sweep.md); the plan counts on its lower end, the highest speed shown to meet
the SLO at 95 %, and says so. Definitions in docs/decide.md."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from servebench.analysis.ties import num
from servebench.decide.load import config_label
from servebench.decide.sweepinfo import lower_end, sweeps
from servebench.decide.prices import HOURS_PER_MONTH
from servebench.outputs.table import Table

COLUMNS = ["model", "config", "trace", "trace_rps", "limit_speed", "limit_range", "first_missing", "capacity_rps", "servers",
           "margin", "binding", "usd_per_hour", "usd_per_month", "price_source"]


class PlanError(ValueError):
    """No plan can be made from these inputs (message is one line)."""


def trace_limits(specs: list[str]) -> list[dict]:
    """Per server group of each sweep among the DIRs (or beneath them) that searched a trace's
    speed: its limit block and the run dirs of its cells (which carry its price in the run table)."""
    out = []
    for _, path, idx in sweeps(specs):
        for g in idx.get("groups") or []:
            lm = g.get("limit") or {}
            if lm.get("by") == "speed":
                dirs = {str(path / c["run_dir"]) for c in idx.get("cells") or []
                        if c.get("group") == g["id"] and c.get("run_dir")}
                out.append({"group": g["id"], "label": config_label(g.get("server") or {}), "limit": lm,
                            "run_dirs": dirs})
    return out


def servers_for(growth: float, limit_speed: float) -> tuple[int, float]:
    """(servers, margin): whole servers for `growth` times the trace's rate when one holds the
    SLO up to `limit_speed` times it; margin = limit_speed x servers / growth - 1."""
    n = max(1, math.ceil(growth / limit_speed - 1e-9))
    return n, limit_speed * n / growth - 1


def _binding(at: dict | None) -> str | None:
    """'ttft_ms.p99<=500 (82% of it)': the bound closest to its limit at the limit point."""
    if not at or not at.get("binding"):
        return None
    row = next(r for r in at["bounds"] if r["bound"] == at["binding"])
    return f"{row['bound']} ({row['share']:.0%} of it)"


def _range(block: dict) -> str | None:
    """'x4-x6.5 (95 %)', or 'x4 (exact)' when the boundary was sharp."""
    low, high = lower_end(block), block.get("high", lower_end(block))
    if low is None:
        return None if high is None else f"<= x{high:g} (none shown)"
    if high is None or high == low:
        return f"x{low:g} (exact)"
    return f"x{low:g}-x{high:g} ({block.get('level', 0.95) * 100:g} %)"


def _never(config: str, block: dict) -> str:
    slo, first, high = block.get("slo"), block.get("first_missing"), block.get("high")
    if high is not None:  # levels were measured, but none could be shown to meet the SLO
        why = block.get("note") or "the noise leaves every level undecided"
        return f"{config}: no speed shown to meet {slo} at 95 % (at most x{high:g}; {why})"
    return f"{config}: never met {slo}" + (f" (even x{first:g} of the trace missed)" if first is not None else "")


def _priced_row(df: pd.DataFrame, run_dirs: set[str]) -> pd.Series | None:
    rows = df[df["run_dir"].isin(run_dirs)] if "run_dir" in df else df.iloc[:0]
    if rows.empty:
        return None
    priced = rows[rows["usd_per_hour"].notna()]
    return (priced if not priced.empty else rows).iloc[0]


def trace_plan(df: pd.DataFrame, limits: list[dict], growth: float) -> Table:
    """One row per configuration whose trace-speed limit was searched."""
    if not limits:
        raise PlanError("--trace-growth: no trace-speed limit in these directories (run `servebench sweep CONFIG "
                        "--max-load-under SLO` on a config whose load is a trace)")
    rows, notes, unpriced = [], [], []
    for lm in limits:
        block, r = lm["limit"], _priced_row(df, lm["run_dirs"])
        trace = block.get("trace") or {}
        best, price = lower_end(block), (None if r is None else num(r.get("usd_per_hour")))
        config = r["config"] if r is not None else lm["label"]
        n, margin = servers_for(growth, best) if best else (None, None)
        if best is None:
            notes.append(_never(config, block))
        elif block.get("first_missing") is None:
            notes.append(f"{config}: met the SLO up to the search's cap x{best:g}: its limit is higher, the plan conservative")
        if price is None and best is not None:
            unpriced.append((config, r))
        rate = trace.get("rate_per_s")
        rows.append({"model": r["family"] if r is not None else None, "config": config, "trace": trace.get("name"),
                     "trace_rps": rate, "limit_speed": best, "limit_range": _range(block),
                     "first_missing": block.get("first_missing"),
                     "capacity_rps": best * rate if best and rate else np.nan, "servers": n, "margin": margin,
                     "binding": _binding(block.get("at_limit")),
                     "usd_per_hour": n * price if n and price is not None else np.nan,
                     "usd_per_month": n * price * HOURS_PER_MONTH if n and price is not None else np.nan,
                     "price_source": r["price_source"] if r is not None else None})
    if unpriced:
        config, r = unpriced[0]
        where = (r.get("instance_type") or r.get("hardware")) if r is not None else None
        raise PlanError(f"--trace-growth: no price for {config}" + (f" ({where})" if where else "") +
                        f": give --price {where or 'HARDWARE'}=USD_PER_HOUR (or --onprem)")
    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["usd_per_hour", "servers", "config"], na_position="last")
    notes.insert(0, f"servers = ceil({growth:g} / limit speed); margin = limit speed x servers / {growth:g} - 1; "
                    f"$/month = $/h x {HOURS_PER_MONTH:g}; limit speed = the lower end of the limit's range "
                    f"(the highest speed shown to meet the SLO at 95 %), not its middle")
    slo = next((lm["limit"].get("slo") for lm in limits), "")
    return Table("trace_plan", f"Capacity plan: {growth:g}x the trace's traffic under {slo}",
                 frame.reset_index(drop=True), notes)
