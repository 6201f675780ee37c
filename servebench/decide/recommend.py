"""From measured runs to a decision: the study's three tables, SLO filtering, Pareto fronts
and capacity. Pure functions of the run table (load.py) and a price book (prices.py);
definitions in docs/decide.md."""

from __future__ import annotations


import numpy as np
import pandas as pd

from servebench.analysis import ties
from servebench.analysis.ties import num
from servebench.decide import cost, noise
from servebench.decide.load import ok_mask
from servebench.decide.names import size_key
from servebench.decide.prices import HOURS_PER_MONTH, Price, PriceBook
from servebench.decide.slo import Bound, meets, missed
from servebench.outputs.table import Table

# Within 0.1 % is below run-to-run noise: such values are reported as a tie, not a winner.
TIE_REL = 1e-3
STUDY_COLUMNS = ["model", "quantization", "where", "concurrency", "ms_per_token_p50", "output_token_throughput",
                 "usd_per_hour", "min_per_1m", "usd_per_1m"]


def add_costs(df: pd.DataFrame, book: PriceBook) -> pd.DataFrame:
    """Price, time and cost per 1M tokens and energy per token for every row."""
    df = df.copy()
    cols = {k: [] for k in ("usd_per_hour", "price_source", "price_note", "min_per_1m", "usd_per_1m",
                            "usd_per_1m_total", "j_per_token", "devices")}
    for _, r in df.iterrows():
        energy = num(r.get("energy_j"))
        stated = num(r.get("stated_usd_per_hour"))
        # GPUs used: the server's own list, else what telemetry sampled (a sweep server with a
        # hardware label and no list has gpu_count 0); the price and the per-GPU figures share it
        n = _int(r.get("gpu_count")) or _int(r.get("gpus_measured"))
        p = book.lookup(instance_type=_str(r.get("instance_type")), hardware=_str(r.get("hardware")),
                        gpu_count=n, energy_j=energy, duration_s=num(r.get("duration_s")),
                        stated=Price(stated, _str(r.get("stated_price_source")) or "source") if stated is not None else None)
        tps, tot = num(r.get("output_token_throughput")), num(r.get("total_token_throughput"))
        cols["usd_per_hour"].append(p.usd_per_hour if p else np.nan)
        cols["price_source"].append(p.source if p else None)
        cols["price_note"].append(p.note if p else None)
        cols["min_per_1m"].append(_nan(cost.minutes_per_million(tps)))
        cols["usd_per_1m"].append(_nan(cost.usd_per_million(p.usd_per_hour if p else None, tps)))
        cols["usd_per_1m_total"].append(_nan(cost.usd_per_million(p.usd_per_hour if p else None, tot)))
        # energy is over the span the throughput is over (the steady-state window when there is one)
        window_tokens = tps * dur if tps is not None and (dur := num(r.get("duration_s"))) is not None else None
        cols["j_per_token"].append(_nan(cost.joules_per_token(energy, window_tokens)))
        cols["devices"].append(n if n else 1)  # a CPU host (or unknown) counts as one device
    for k, v in cols.items():
        df[k] = v
    df["where"] = [_str(a) or _str(b) or "?" for a, b in zip(df.get("instance_type", [None] * len(df)), df.get("hardware", [None] * len(df)))]
    df["tput_per_gpu"] = df["output_token_throughput"] / df["devices"]
    df["tput_per_user"] = 1000.0 / df["tpot_ms_p50"].where(df["tpot_ms_p50"] > 0)
    return noise.cost_cis(df)


def _int(v) -> int | None:
    f = num(v)
    return int(f) if f is not None else None


def _str(v) -> str | None:
    return v if isinstance(v, str) and v else None


def _nan(v):
    return np.nan if v is None else v


def _best(rows: pd.DataFrame, col: str, lowest: bool, tiebreak: list[tuple[str, bool]]) -> tuple[pd.Series, list[str], str]:
    """The best row by col (the tie-breakers order equal values only), the configurations tied
    with it, and the verdict: "winner", or "tie (±N %)" when another row's interval overlaps the
    best one's (decide/noise.py); rows without intervals tie within TIE_REL. The best measured
    value is shown, flagged: the reader sees what was measured and what it cannot be told from."""
    keys = [col] + [c for c, _ in tiebreak] + ["config"]
    asc = [lowest] + [lo for _, lo in tiebreak] + [True]
    ordered = rows.sort_values(keys, ascending=asc, na_position="last")
    top = ordered.iloc[0]
    v = top[col]
    close = np.isclose(ordered[col], v, rtol=TIE_REL, atol=0)
    by_ci = [ties.interval(r, col) is not None and ties.interval(top, col) is not None for _, r in ordered.iterrows()]
    tie = [(ties.tied(r, top, col) is not None) if known else bool(c) for (_, r), known, c in zip(ordered.iterrows(), by_ci, close)]
    tied = ordered[tie]
    names = [f"{r['config']} @ {r['load_level']}" for _, r in tied.iterrows()]
    if len(tied) < 2:
        return top, [], "winner"
    ivs = [ties.interval(r, col) for _, r in tied.iterrows()]
    if all(iv is not None for iv in ivs):
        verdict = ties.tie_text(ivs, float(v))
    else:
        verdict = f"tie within {TIE_REL:.1%}"
    return top, names, verdict


TABLES = (
    # key, title, column, lowest wins, tie-breakers
    ("cost", "Most cost-effective deployment", "usd_per_1m", True, [("ms_per_token_p50", True)]),
    ("latency", "Lowest latency deployment", "ms_per_token_p50", True, [("usd_per_1m", True), ("output_token_throughput", False)]),
    ("throughput", "Highest throughput deployment", "output_token_throughput", False, [("usd_per_1m", True)]),
)


def _empty_note(model: str, key: str, cand: pd.DataFrame, at: dict[str, float], what: str) -> str:
    """Why a model has no row in a table, with what would give it one."""
    if key in at and not (cand["concurrency"] == at[key]).any():
        return (f"{model}: no measured run at {at[key]:g} concurrent{what} to rank "
                f"(concurrency levels measured: {', '.join(f'{c:g}' for c in sorted(set(cand['concurrency'].dropna()))) or 'none'})")
    cand = cand[cand["concurrency"] == at[key]] if key in at else cand
    if key == "cost" and len(cand) and cand["usd_per_hour"].isna().all():
        return f"{model}: every run unpriced{what}: nothing to rank by $ per 1M (give --price)"
    return f"{model}: no measured run{what} to rank"


def _candidates(base: pd.DataFrame, model: str, key: str, col: str, at: dict[str, float], notes: list[str]) -> pd.DataFrame:
    cand = base[base["family"] == model]
    if key in at:
        cand = cand[cand["concurrency"] == at[key]]
    if key == "cost":
        unpriced = cand[cand["usd_per_hour"].isna()]
        for cfg in sorted(unpriced["config"].unique()):
            notes.append(f"{model}: no price for {cfg} (give --price): left out of this table")
        cand = cand[cand["usd_per_1m"].notna()]
    return cand[cand[col].notna()]


def study_tables(df: pd.DataFrame, *, at: dict[str, float] | None = None, mask: pd.Series | None = None,
                 suffix: str = "", what: str = "") -> list[Table]:
    """Per model, the row that wins each of the study's three tables. `at` restricts a table to
    one concurrency (the study: cost at 5, latency at 1, throughput at 20)."""
    at = at or {}
    base = df[ok_mask(df) if mask is None else (mask & ok_mask(df))]
    out = []
    for key, title, col, lowest, tiebreak in TABLES:
        rows, notes = [], []
        for model in sorted(df["family"].dropna().unique(), key=size_key):
            cand = _candidates(base, model, key, col, at, notes)
            if cand.empty:
                notes.append(_empty_note(model, key, base[base["family"] == model], at, what))
                continue
            top, tied, verdict = _best(cand, col, lowest, tiebreak)
            rows.append(top.copy())
            rows[-1]["vs_next"] = verdict  # not "verdict": that column is the comparison's vs its baseline
            if tied:
                notes.append(f"{model}: {verdict} on {col}: " + "; ".join(tied) + f" (shown: {top['config']}, the best measured)")
        frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=STUDY_COLUMNS)
        if rows:  # "model" is the family (GPTQ and fp16 checkpoints of one model compete); config names the checkpoint
            frame = frame.assign(model=frame["family"])[STUDY_COLUMNS + ["config", "load_level", "vs_next"]]
        if rows and frame["concurrency"].notna().all():
            frame = frame.drop(columns="load_level")  # the concurrency column already says it
        sub = f" at {at[key]:g} concurrent" if key in at else ""
        out.append(Table(key + suffix, f"{title}{sub}{what}", frame.reset_index(drop=True), notes))
    return out


def slo_tables(df: pd.DataFrame, bounds: list[Bound], at: dict[str, float] | None = None) -> list[Table]:
    met = meets(df, bounds)
    slo_text = ", ".join(b.text for b in bounds)
    tables = study_tables(df, at=at, mask=met, suffix="_slo", what=f" under SLO {slo_text}")
    never = never_met(df, bounds, met)
    if never:
        tables[0].notes.extend(never)
    return tables


def never_met(df: pd.DataFrame, bounds: list[Bound], met: pd.Series | None = None) -> list[str]:
    """Configurations with no run meeting the SLO, with what their least-loaded run missed."""
    met = meets(df, bounds) if met is None else met
    notes = []
    for cfg, g in df.groupby("config", sort=True):
        if met[g.index].any() or (g["status"] == "skipped").all():  # skipped: named under the first table
            continue
        ok = g[ok_mask(g)]
        if ok.empty:
            why = "; ".join(sorted({_short(e) for e in g["error"].dropna()})) or "failed"
            notes.append(f"{cfg}: never met the SLO (no measured run: {why})")
            continue
        first = ok.sort_values(["concurrency", "rate"], na_position="last").iloc[0]
        notes.append(f"{cfg}: never met the SLO (at {first['load_level']}: missed {', '.join(missed(first, bounds))})")
    return notes


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point dominates, both axes minimised. q dominates p when it is no worse
    on both and better on one, so a point that ties another on one axis and is worse on the
    other is out (dominated ties excluded); exact duplicates both stay."""
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        no_worse = (x <= x[i]) & (y <= y[i])
        better = (x < x[i]) | (y < y[i])
        keep[i] = not np.any(no_worse & better)
    return keep


def pareto_tables(df: pd.DataFrame) -> list[Table]:
    base = df[ok_mask(df)]
    cost_rows, tput_rows, notes_c, notes_t = [], [], [], []
    for model, g in sorted(base.groupby("family"), key=lambda kv: size_key(kv[0])):
        priced = g[g["usd_per_1m"].notna() & g["ms_per_token_p50"].notna()]
        if len(priced) < len(g):
            notes_c.append(f"{model}: {len(g) - len(priced)} run(s) without a price left out")
        if not priced.empty:
            m = pareto_mask(priced["usd_per_1m"].to_numpy(float), priced["ms_per_token_p50"].to_numpy(float))
            front = priced[m].sort_values("usd_per_1m")
            cost_rows.append(front)
            notes_c.extend(_duplicates(model, front, ["usd_per_1m", "ms_per_token_p50"]))
        t = g[g["tput_per_gpu"].notna() & g["tput_per_user"].notna()]
        if not t.empty:
            m = pareto_mask(-t["tput_per_gpu"].to_numpy(float), -t["tput_per_user"].to_numpy(float))
            front = t[m].sort_values("tput_per_gpu", ascending=False)
            tput_rows.append(front)
            notes_t.extend(_duplicates(model, front, ["tput_per_gpu", "tput_per_user"]))
        cpu = g[(g["gpu_count"].fillna(0) == 0)]
        if not cpu.empty:
            notes_t.append(f"{model}: {cpu['config'].nunique()} configuration(s) without GPUs count the host as one device")
    cc = ["family", "config", "load_level", "usd_per_1m", "ms_per_token_p50", "output_token_throughput", "usd_per_hour"]
    tc = ["family", "config", "load_level", "devices", "tput_per_gpu", "tput_per_user", "output_token_throughput"]
    cost_rows = [f.drop(columns="model").rename(columns={"family": "model"}) for f in cost_rows]
    tput_rows = [f.drop(columns="model").rename(columns={"family": "model"}) for f in tput_rows]
    cc[0] = tc[0] = "model"
    return [
        Table("pareto_cost", "Pareto front: $ per 1M tokens vs latency (ms/token median)",
              pd.concat(cost_rows)[cc].reset_index(drop=True) if cost_rows else pd.DataFrame(columns=cc), notes_c),
        Table("pareto_throughput", "Pareto front: throughput per GPU vs per user (1000 / TPOT median)",
              pd.concat(tput_rows)[tc].reset_index(drop=True) if tput_rows else pd.DataFrame(columns=tc), notes_t),
    ]


def _duplicates(model: str, front: pd.DataFrame, cols: list[str]) -> list[str]:
    """Front points that tie exactly on both axes (both stay on the front): say so."""
    out = []
    for _, g in front.groupby(cols, sort=False):
        if len(g) > 1:
            out.append(f"{model}: tie on the front: " + "; ".join(f"{r['config']} @ {r['load_level']}" for _, r in g.iterrows()))
    return out


def _load_value(r) -> float:
    return float(r["concurrency"]) if num(r.get("concurrency")) else (num(r.get("rate")) or 0.0)


def capacity(df: pd.DataFrame, target_rps: float, bounds: list[Bound],
             caps: dict[str, tuple[float | None, str]] | None = None) -> Table:
    """Servers of each configuration needed for target_rps: one server carries the request
    rate it achieved at the highest load level at which it met the SLO. `caps` (sweepinfo.py):
    a configuration whose limit was searched counts on no level above the range's lower end."""
    met = meets(df, bounds) if bounds else ok_mask(df)
    rows, notes = [], []
    cols = ["model", "config", "load_level", "capacity_rps", "servers", "usd_per_hour", "usd_per_month", "price_source"]
    for cfg, g in df.groupby("config", sort=True):
        ok = g[met[g.index]]
        if cfg in (caps or {}):
            low, line = caps[cfg]
            ok = ok[[low is not None and _load_value(ok.loc[i]) <= low for i in ok.index]]
            notes.append(line)
        if ok.empty:
            continue
        top = ok.loc[max(ok.index, key=lambda i: (_load_value(ok.loc[i]), ok.loc[i, "request_throughput"] or 0))]
        n = cost.servers_needed(target_rps, num(top["request_throughput"]))
        price = num(top["usd_per_hour"])
        rows.append({"model": top["family"], "config": cfg, "load_level": top["load_level"],
                     "capacity_rps": top["request_throughput"], "servers": n,
                     "usd_per_hour": n * price if n and price is not None else np.nan,
                     "usd_per_month": n * price * HOURS_PER_MONTH if n and price is not None else np.nan,
                     "price_source": top["price_source"]})
        if price is None:
            notes.append(f"{cfg}: no price: server count only (give --price)")
    frame = pd.DataFrame(rows, columns=cols).sort_values(["usd_per_hour", "servers"], na_position="last")
    frame = frame.iloc[sorted(range(len(frame)), key=lambda i: size_key(frame["model"].iloc[i]))]  # stable: price order kept
    for model, g in sorted(frame.groupby("model"), key=lambda kv: size_key(kv[0])):
        cheapest = g[g["usd_per_hour"].notna()]
        cheapest = cheapest[np.isclose(cheapest["usd_per_hour"], cheapest["usd_per_hour"].min(), rtol=TIE_REL)]
        if len(cheapest) > 1:
            notes.append(f"{model}: tie for cheapest at ${cheapest['usd_per_hour'].iloc[0]:,.2f}/h: " + "; ".join(cheapest["config"]))
    if bounds:
        notes.extend(never_met(df, bounds, met))
    else:
        notes.append("no --slo given: each configuration's capacity is its highest measured load")
    return Table("capacity", f"Capacity for {target_rps:g} req/s" + (" under the SLO" if bounds else ""),
                 frame.reset_index(drop=True), notes)


def _short(text, n: int = 240) -> str:
    text = str(text) if text is not None else ""
    # Keep both ends: engines put the cause last ("... RuntimeError: CUDA out of memory").
    return text if len(text) <= n else text[: n // 2] + " … " + text[-(n // 2):]


def _why(row: pd.Series) -> str:
    """Why a row is not ranked. A cell the index still calls running or pending may hold a
    finished run (the sweep stopped before marking it): say what it holds, not "no request"."""
    err, done = row.get("error"), row.get("completed")
    if isinstance(err, str) and err:
        return _short(err)
    if row.get("status") in ("running", "pending"):
        held = f"; its run dir holds {int(done)} completed requests" if pd.notna(done) and done else ""
        return f"the sweep did not finish this cell (sweep --resume runs it){held}"
    return "no completed request"


def failed_runs(df: pd.DataFrame) -> list[str]:
    """One line per configuration and failure (its load levels and cells listed)."""
    bad = df[~ok_mask(df)].copy()
    bad["why"] = [_why(r) for _, r in bad.iterrows()]
    out = []
    for (cfg, status, why), g in bad.groupby(["config", "status", "why"], sort=True, dropna=False):
        if status == "skipped":
            out.append(f"{cfg}: skipped: {why}")
            continue
        out.append(f"{cfg} @ {', '.join(g['load_level'])} ({', '.join(map(str, g['cell']))}): {status}: {why}")
    return out


def recommend(df: pd.DataFrame, *, bounds: list[Bound] | None = None, target_rps: float | None = None,
              at: dict[str, float] | None = None, caps: dict[str, tuple[float | None, str]] | None = None) -> list[Table]:
    tables = study_tables(df, at=at)
    fails = failed_runs(df)
    if fails:
        tables[0].notes.extend(f"not ranked: {f}" for f in fails)
    if bounds:
        tables += slo_tables(df, bounds, at)
    tables += pareto_tables(df)
    if target_rps:
        tables.append(capacity(df, target_rps, bounds or [], caps))
    if "goodput" in df:
        cols = ["model", "config", "load_level", "goodput", "goodput_rps", "completed", "failed"]
        tables.append(Table("goodput", "Goodput (share of requests meeting every bound; errors are misses)",
                            df[cols].reset_index(drop=True)))
    return tables
