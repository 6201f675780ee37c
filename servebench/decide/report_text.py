"""The report's words, generated from the recommendation tables and the run table, never
written by hand: why each row of the study's three tables won (its figure, the best other
configuration, and whether their 95 % intervals overlap), and one "what to buy" sentence per
model."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from servebench.analysis.intervals import Interval, overlap
from servebench.decide.load import merge_repeats, ok_mask
from servebench.decide.names import size_key
from servebench.decide.slo import SloError, meets, parse_slo
from servebench.outputs import plotstyle as ps
from servebench.outputs.table import Table

# table key -> (column, lowest wins, what winning means)
STUDY = {"cost": ("usd_per_1m", True, "lowest cost"), "latency": ("ms_per_token_p50", True, "lowest latency"),
         "throughput": ("output_token_throughput", False, "highest throughput")}


@dataclass(slots=True)
class Reason:
    text: str
    tied_with: str | None = None  # the best other configuration, when the intervals overlap


def study_key(t: Table) -> str | None:
    k = t.key.removesuffix("_slo")
    return k if k in STUDY else None


def value_text(col: str, v) -> str:
    v = float(v)
    if col.startswith("usd"):
        return f"${v:,.2f}" if v >= 1 else f"${v:.2g}"
    if col.startswith("ms_per_token"):
        return f"{v:,.2f} ms/token"
    return f"{v:,.0f} tokens/s" if v >= 100 else f"{v:,.1f} tokens/s"


def level_text(row: pd.Series) -> str:
    lvl = row.get("load_level")
    if isinstance(lvl, str) and lvl:
        return lvl
    c = row.get("concurrency")
    return f"{float(c):g} concurrent" if c is not None and c == c else "?"


def _candidates(t: Table, df: pd.DataFrame, model: str, col: str) -> pd.DataFrame | None:
    """The runs the table ranked for `model`: priced, at its concurrency and under its SLO as
    the title states them; None when the SLO in the title cannot be read back."""
    # the ranked table as given (repeats averaged before pricing); per-run rows are averaged here
    cand = df if "repeats" in df.columns else merge_repeats(df)
    cand = cand[ok_mask(cand) & (cand["family"] == model) & cand[col].notna()]
    if col == "usd_per_1m" or t.key.startswith("cost"):
        cand = cand[cand["usd_per_1m"].notna()]
    at = re.search(r" at (\d+(?:\.\d+)?) concurrent", t.title)
    if at:
        cand = cand[cand["concurrency"] == float(at.group(1))]
    slo = re.search(r" under SLO (.+)$", t.title)
    if slo:
        try:
            cand = cand[meets(cand, parse_slo(slo.group(1)))]
        except (SloError, KeyError, ValueError):
            return None
    return cand


def _interval(r: pd.Series, col: str) -> Interval | None:
    lo, hi = (r.get(c) for c in ps.ci_columns(col))
    ok = [v for v in (lo, hi) if v is not None and v == v]
    if not ok:
        return None
    return Interval(lo if lo == lo else None, hi if hi == hi else None, "given", 0)


def _margin(col: str, lowest: bool, win: float, other: float) -> str:
    """The shown row's figure against the next one's. The shown row can be the worse of the two
    when they tie within noise and the tie-break picked it (decide/recommend._best)."""
    if not (np.isfinite(win) and np.isfinite(other)) or win <= 0 or other <= 0:
        return ""
    word = "lower" if win < other else "higher"
    ratio = other / win if lowest else win / other
    if ratio >= 2:
        return f"{ratio:.1f}x {word}"
    # the gap in % of the next one's figure: 1.75 against 2.15 ms is 19 % lower, not the 23 % by
    # which 2.15 is higher
    gap = abs(win / other - 1)
    if gap < 0.001:
        return "equal to 0.1 %"
    return f"{gap:.1%} {word}" if gap < 0.01 else f"{gap:.0%} {word}"


def reason(t: Table, row: pd.Series, df: pd.DataFrame) -> Reason:
    col, lowest, what = STUDY[study_key(t)]
    model, cfg = row["model"], row["config"]
    head = f"{what}: {value_text(col, row[col])}"
    cand = _candidates(t, df, model, col)
    if cand is None:
        return Reason(head + " (the other configurations under the SLO could not be listed)")
    others = cand[cand["config"] != cfg].sort_values(col, ascending=lowest)
    if others.empty:
        return Reason(head + f"; the only configuration of {model} ranked here")
    o = others.iloc[0]
    text = f"{head}; next: {o['config']} @ {o['load_level']}, {value_text(col, o[col])} ({_margin(col, lowest, row[col], o[col])})"
    win_rows = cand[(cand["config"] == cfg) & np.isclose(cand[col].astype(float), float(row[col]))]
    a = _interval(win_rows.iloc[0], col) if len(win_rows) else None
    b = _interval(o, col)
    if a is None or b is None:
        return Reason(text + "; no intervals to judge the noise")
    if overlap(a, b):
        return Reason(text + "; a tie within the 95 % intervals", tied_with=str(o["config"]))
    return Reason(text + "; apart beyond the 95 % intervals")


def reasons(t: Table, df: pd.DataFrame) -> list[Reason]:
    return [reason(t, r, df) for _, r in t.df.iterrows()]


def what_to_buy(tables: list[Table], df: pd.DataFrame) -> list[str]:
    """One sentence per model from the three tables (the SLO-bound ones when the report has
    them): which configuration to buy for which goal, at what figure and load."""
    keyed = {t.key: t for t in tables if study_key(t)}
    use = [keyed[k + "_slo"] if k + "_slo" in keyed else keyed[k] for k in STUDY if k in keyed or k + "_slo" in keyed]
    wins: dict[str, dict[str, list[str]]] = {}
    for t in use:
        col, _, what = STUDY[study_key(t)]
        for (_, r), why in zip(t.df.iterrows(), reasons(t, df)):
            tie = f", tied within noise with {why.tied_with}" if why.tied_with else ""
            wins.setdefault(str(r["model"]), {}).setdefault(str(r["config"]), []).append(
                f"{what} ({value_text(col, r[col])} at {level_text(r)}{tie})")
    slo = next((m.group(1) for t in use if (m := re.search(r" under SLO (.+)$", t.title))), None)
    out = []
    for model, by_cfg in wins.items():
        parts = [f"{cfg} for the {' and the '.join(goals)}" for cfg, goals in by_cfg.items()]
        where = f" (under SLO {slo})" if slo else ""
        if len(by_cfg) == 1 and sum(len(g) for g in by_cfg.values()) == len(use) > 1:
            parts = [f"{next(iter(by_cfg))}, which wins all {len(use)} tables: " + "; ".join(next(iter(by_cfg.values())))]
        out.append(f"{model}{where}: buy " + "; ".join(parts) + ".")
    for model in sorted(set(df.loc[ok_mask(df), "family"].dropna().astype(str)) - set(wins), key=size_key):
        why = f"no configuration met the SLO {slo}" if slo else "no run could be ranked"
        out.append(f"{model}: nothing to buy from these runs: {why} (see the notes under the tables).")
    return out
