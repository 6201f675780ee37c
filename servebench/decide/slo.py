"""Service-level objectives over run rows, and goodput over raw request records.

SLO: "ttft_p95<=1000ms,ms_per_token_p50<=50" -- bounds on a run's summary percentiles
(metric: ttft, tpot, itl, e2e/e2el, ms_per_token, error_rate, goodput; stat: mean, p50, p90,
p95, p99; unit ms (default) or s). A missing value never meets a bound.

Goodput (the convention of vllm bench serve / aiperf: `ttft:500 tpot:50 e2el:2000`, ms): the
share of measured requests that met every bound; failed requests count as misses.
"""

from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from servebench.analysis import metrics, steady
from servebench.store.runfiles import load_records

_METRIC = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2e": "e2e_ms", "e2el": "e2e_ms",
           "ms_per_token": "ms_per_token", "latency": "ms_per_token"}
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_BOUND = re.compile(r"^\s*([a-z_][a-z0-9_]*?)(?:_(mean|p50|p90|p95|p99|median))?\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*(ms|s|%)?\s*$")


class SloError(ValueError):
    """An SLO or goodput spec can't be parsed (message is one line)."""


@dataclass(frozen=True, slots=True)
class Bound:
    text: str
    column: str
    op: str
    value: float

    def met(self, v) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and _OPS[self.op](v, self.value)


def _check_bound(text: str, col: str, op: str, value: float) -> None:
    """A bound no run could mean: negative, infinite, a share past 100 %, or a floor on a
    latency or on the error rate (a faster server or fewer errors would "miss" it)."""
    if not math.isfinite(value) or value < 0:
        raise SloError(f"SLO bound {text!r}: the bound must be a finite number, 0 or more")
    if col in ("error_rate", "goodput") and value > 1:
        raise SloError(f"SLO bound {text!r}: {col} is a share, 0 to 1 (or 0% to 100%)")
    if op in (">=", ">") and col != "goodput":
        what = "the error rate" if col == "error_rate" else "a latency"
        raise SloError(f"SLO bound {text!r}: {what} is bounded from above (<= or <); "
                       "only goodput takes a lower bound (goodput>=0.9)")


def parse_slo(spec: str | None, max_error_rate: float | None = None) -> list[Bound]:
    bounds: list[Bound] = []
    for part in [p for p in (spec or "").split(",") if p.strip()]:
        m = _BOUND.match(part.lower())
        if not m:
            raise SloError(f"SLO bound {part.strip()!r}: expected e.g. ttft_p95<=1000ms")
        name, stat, op, num, unit = m.groups()
        try:
            value = float(num)
        except ValueError:
            raise SloError(f"SLO bound {part.strip()!r}: {num!r} is not a number") from None
        if name in ("error_rate", "goodput"):
            col = name
            value = value / 100 if unit == "%" else value
        elif name in _METRIC:
            col = f"{_METRIC[name]}_{'p50' if stat in (None, 'median') else stat}"
            value = value * 1000 if unit == "s" else value
            if unit == "%":
                raise SloError(f"SLO bound {part.strip()!r}: latency in ms or s, not %")
        else:
            raise SloError(f"SLO bound {part.strip()!r}: unknown metric {name!r} (known: {', '.join(sorted(_METRIC))}, error_rate, goodput)")
        _check_bound(part.strip(), col, op, value)
        bounds.append(Bound(part.strip(), col, op, value))
    if max_error_rate is not None and bounds and not any(b.column == "error_rate" for b in bounds):
        bounds.append(Bound(f"error_rate<={max_error_rate:g}", "error_rate", "<=", max_error_rate))
    return bounds


def meets(df: pd.DataFrame, bounds: list[Bound]) -> pd.Series:
    """True where a run met every bound (only measured runs can)."""
    from servebench.decide.load import ok_mask

    ok = ok_mask(df)
    for b in bounds:
        col = df[b.column] if b.column in df else pd.Series(float("nan"), index=df.index)
        ok &= col.map(b.met).astype(bool)
    return ok


def missed(row, bounds: list[Bound]) -> list[str]:
    """The bounds one run missed, with its value (for 'never met the SLO' notes)."""
    out = []
    for b in bounds:
        v = row.get(b.column)
        if not b.met(v):
            out.append(f"{b.text} (was {'-' if v is None or v != v else f'{v:.4g}'})")
    return out


def parse_goodput(items: list[str] | tuple[str, ...]) -> dict[str, float]:
    """['ttft:500', 'tpot:50 e2el:2000'] -> {'ttft': 500.0, 'tpot': 50.0, 'e2el': 2000.0} (ms)."""
    out: dict[str, float] = {}
    for tok in " ".join(items).replace(",", " ").split():
        k, sep, v = tok.partition(":")
        k = k.strip().lower()
        if not sep or k not in ("ttft", "tpot", "e2el", "itl"):
            raise SloError(f"--goodput {tok!r}: expected ttft:MS, tpot:MS, itl:MS or e2el:MS")
        try:
            out[k] = float(v)
        except ValueError:
            raise SloError(f"--goodput {tok!r}: {v!r} is not a number of ms") from None
        if not out[k] > 0:
            raise SloError(f"--goodput {tok!r}: bound must be > 0 ms")
    return out


def goodput(run_dir: str | Path, bounds: dict[str, float]) -> tuple[float, int, int, int] | None:
    """(share, good, measured, good completions) from requests.parquet; None when there is
    nothing to read. The requests are summary.json's: every measured one, a failure before
    sending included (a miss), or those of its steady-state window; the completions are the
    ones its throughputs count (inside the window, wherever sent), for goodput req/s.

    itl bounds every gap of the request (its worst gap), the others its single value."""
    path = Path(run_dir) / "requests.parquet"
    if not bounds or not path.exists():
        return None
    measured = [r for r in load_records(path) if not r.warmup and (r.sent_ns or r.error)]
    win = steady.stored(measured, _steady_block(Path(run_dir)))
    recs = steady.keep(measured, win) if win else measured
    done = steady.completions(measured, win) if win else [r for r in recs if r.ok]
    good = sum(1 for r in recs if _met(r, bounds))
    return (good / len(recs) if recs else 0.0), good, len(recs), sum(1 for r in done if _met(r, bounds))


def _steady_block(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("steady_state")
    except (OSError, ValueError, AttributeError):
        return None


def _met(r, bounds: dict[str, float]) -> bool:
    if not r.ok:
        return False
    vals = {"ttft": metrics.ttft_ns(r), "tpot": metrics.tpot_ns(r), "e2el": metrics.e2e_ns(r)}
    gaps = metrics.itl_gaps_ns(r)
    vals["itl"] = max(gaps) if gaps else None
    # A request too short to have a value (1 token: no TPOT) is not held to that bound.
    return all(vals[k] is None and k in ("tpot", "itl") or (vals[k] is not None and vals[k] / 1e6 <= ms)
               for k, ms in bounds.items())


def add_goodput(df: pd.DataFrame, bounds: dict[str, float]) -> pd.DataFrame:
    df = df.copy()
    shares, rates = [], []
    for _, row in df.iterrows():
        g = goodput(row["run_dir"], bounds) if isinstance(row.get("run_dir"), str) else None
        shares.append(g[0] if g else float("nan"))
        dur = row.get("duration_s")
        rates.append(g[3] / dur if g and dur and dur > 0 else float("nan"))
    df["goodput"] = shares
    df["goodput_rps"] = rates
    return df
