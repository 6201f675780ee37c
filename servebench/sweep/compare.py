"""Side-by-side tables of a compare or sweep directory: one table per load level, one row
per server configuration, the winner of each column marked. Pure over the directory's
index.json and each cell's summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servebench.analysis.intervals import Interval, overlap, repeats_ci
from servebench.analysis.ties import tie_text
from servebench.store.runfiles import load_summary, read_json

# (column, how to read it from a summary, better: "high" | "low" | None, digits)
COLUMNS: list[tuple[str, Any, str | None, int]] = [
    ("req/s", lambda s: s.get("request_throughput"), "high", 2),
    ("out tok/s", lambda s: s.get("output_token_throughput"), "high", 1),
    ("TTFT p50", lambda s: _p(s, "ttft_ms", "p50"), "low", 1),
    ("TTFT p99", lambda s: _p(s, "ttft_ms", "p99"), "low", 1),
    ("TPOT p50", lambda s: _p(s, "tpot_ms", "p50"), "low", 2),
    ("TPOT p99", lambda s: _p(s, "tpot_ms", "p99"), "low", 2),
    ("ITL p50", lambda s: _p(s, "itl_ms", "p50"), "low", 2),
    ("ITL p99", lambda s: _p(s, "itl_ms", "p99"), "low", 2),
    ("e2e p50", lambda s: _p(s, "e2e_ms", "p50"), "low", 0),
    ("e2e p99", lambda s: _p(s, "e2e_ms", "p99"), "low", 0),
    ("ms/token p50", lambda s: _p(s, "ms_per_token", "p50"), "low", 2),
    ("out len", lambda s: (s.get("output_tokens") or {}).get("achieved_mean"), None, 1),
    ("GPU mem GiB", lambda s: _gpu(s, "peak_mem_used_bytes", 2**30), "low", 2),
    ("GPU util %", lambda s: _gpu(s, "mean_util_gpu_pct", 1), None, 0),
    ("J/token", lambda s: _gpu(s, "joules_per_output_token", 1), "low", 3),
]


# column -> summary.json intervals key (the run's own 95 % interval of that figure)
_FIGURE = {"req/s": "request_throughput", "out tok/s": "output_token_throughput", "TTFT p50": "ttft_ms.p50",
           "TTFT p99": "ttft_ms.p99", "TPOT p50": "tpot_ms.p50", "TPOT p99": "tpot_ms.p99", "ITL p50": "itl_ms.p50",
           "ITL p99": "itl_ms.p99", "e2e p50": "e2e_ms.p50", "e2e p99": "e2e_ms.p99", "ms/token p50": "ms_per_token.p50"}


def _p(s: dict, metric: str, stat: str) -> float | None:
    return (s.get(metric) or {}).get(stat)


def _gpu(s: dict, key: str, scale: float) -> float | None:
    total = (((s.get("telemetry") or {}).get("gpu") or {}).get("total")) or {}
    v = total.get(key)
    return None if v is None else v / scale


@dataclass
class Row:
    label: str
    status: str
    values: list[float | None] = field(default_factory=list)
    note: str = ""  # why a row has no numbers, or what is off about them
    cis: list[Interval | None] = field(default_factory=list)  # 95 %: across repeats, else the run's own


@dataclass
class LevelTable:
    level: str  # c=4, rate=2/s, burst
    columns: list[str]
    rows: list[Row]
    winners: dict[str, list[str]]  # column -> labels of the best row(s) (ties share the win)
    ties: dict[str, str] = field(default_factory=dict)  # column -> "tie (±N %)" where intervals overlap


def tables(sweep_dir: Path) -> list[LevelTable]:
    """One table per load level (repeats averaged), in the order the sweep ran them."""
    sweep_dir = Path(sweep_dir)
    index = read_json(sweep_dir / "index.json")
    groups = {g["id"]: g for g in index["groups"]}
    levels: dict[str, dict[str, list[dict]]] = {}
    status: dict[tuple[str, str], list[dict]] = {}
    for c in index["cells"]:
        if c.get("search"):  # a limit search's probe: its own requests and prompts, not a repeat
            continue
        level = _level(c["load"])
        levels.setdefault(level, {}).setdefault(c["group"], [])
        status.setdefault((level, c["group"]), []).append(c)
        if c["status"] == "done" and c.get("run_dir"):
            try:
                levels[level][c["group"]].append(load_summary(sweep_dir / c["run_dir"]))
            except (OSError, ValueError):
                pass
    out = []
    for level, by_group in levels.items():
        rows = []
        for gid in groups:
            if gid not in by_group:
                continue
            label = groups[gid]["server"]["label"]
            sums = by_group[gid]
            cells = status[(level, gid)]
            if not sums:
                why = next((c.get("error") for c in cells if c.get("error")), None) or groups[gid].get("error")
                rows.append(Row(label, cells[-1]["status"], [None] * len(COLUMNS), why or cells[-1]["status"]))
                continue
            vals = [_mean([get(s) for s in sums]) for _, get, _, _ in COLUMNS]
            rows.append(Row(label, "done", vals, _note(sums, len(cells)), [_ci(name, get, sums) for name, get, _, _ in COLUMNS]))
        wins, ties = _winners(rows)
        out.append(LevelTable(level, [c[0] for c in COLUMNS], rows, wins, ties))
    return out


def _ci(name: str, get: Any, sums: list[dict]) -> Interval | None:
    """Across repeats (Student t) where there are 2+, else the run's own interval."""
    if name not in _FIGURE:
        return None
    if len(sums) > 1:
        iv = repeats_ci([get(s) for s in sums])
    else:
        f = (((sums[0].get("intervals") or {}).get("figures") or {}).get(_FIGURE[name])) or {}
        iv = Interval(f.get("low"), f.get("high"), f.get("method", "run"), f.get("n", 0))
    return None if iv.low is None and iv.high is None else iv


def _level(load: dict) -> str:
    if load["mode"] == "concurrency":
        return f"c={load['concurrency']}"
    if load["mode"] == "rate":
        return f"rate={load['rate']:g}/s"
    return f"trace x{load['speed']:g}" if load["mode"] == "trace" else "burst"


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _note(sums: list[dict], n_cells: int) -> str:
    notes = []
    if len(sums) > 1:
        notes.append(f"mean of {len(sums)} repeats")
    if len(sums) < n_cells:
        notes.append(f"{n_cells - len(sums)} repeat(s) failed")
    failed = sum(s.get("failed", 0) for s in sums)
    if failed:
        notes.append(f"{failed} request(s) failed")
    short = sum((s.get("output_tokens") or {}).get("shortfall_requests", 0) for s in sums)
    if short:
        notes.append(f"{short} request(s) short of the output length")
    return "; ".join(notes)


def _winners(rows: list[Row]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per column, the best row and every row tied with it: equal as displayed, or its 95 %
    interval overlaps the best one's (then the column's tie says how far they reach)."""
    wins: dict[str, list[str]] = {}
    ties: dict[str, str] = {}
    for j, (name, _, better, digits) in enumerate(COLUMNS):
        if better is None:
            continue
        # compared as displayed: a difference nobody can see in the table is a tie
        vals = [(round(r.values[j], digits), r) for r in rows if r.values and r.values[j] is not None]
        if len(vals) < 2:
            continue
        best = max(v for v, _ in vals) if better == "high" else min(v for v, _ in vals)
        top = next(r for v, r in vals if v == best)
        ci = lambda r: r.cis[j] if len(r.cis) > j else None  # noqa: E731
        by_ci = [r for v, r in vals if v != best and ci(r) and ci(top) and overlap(ci(r), ci(top))]
        wins[name] = [r.label for v, r in vals if v == best] + [r.label for r in by_ci]
        if by_ci:
            ties[name] = tie_text([ci(top)] + [ci(r) for r in by_ci], top.values[j])
    return wins, ties


def fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown(tabs: list[LevelTable]) -> str:
    lines = []
    for t in tabs:
        lines += [f"### {t.level}", "", "| server | " + " | ".join(t.columns) + " | notes |",
                  "|---|" + "---:|" * len(t.columns) + "---|"]
        for r in t.rows:
            cells = []
            for j, (name, _, _, digits) in enumerate(COLUMNS):
                s = fmt(r.values[j], digits)
                cells.append(f"**{s}**" if r.label in t.winners.get(name, []) else s)
            lines.append(f"| {_md(r.label)} | " + " | ".join(cells) + f" | {_md(r.note)} |")
        lines.append("")
        if t.ties:
            lines += ["Intervals overlap (no winner): " + "; ".join(f"{k} {v}" for k, v in t.ties.items()), ""]
    lines.append("Bold: best in its column at that level (higher throughput, lower latency/memory/energy); "
                 "equal as displayed, or 95 % intervals that overlap, is a tie. Definitions: docs/metrics.md.")
    return "\n".join(lines) + "\n"
