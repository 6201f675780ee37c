"""Did one load level meet an SLO bound? Three answers, from the bound's own 95 % interval.

`met` when the interval lies entirely within the limit, `missed` when it lies entirely past
it, `undecided` when it straddles the limit: the noise of this many requests cannot say. A
level measured several times (the limit search's repeats at its boundary) is judged on its
runs pooled: per-request values joined, failures counted together.

Where the interval comes from, best first:
- the runs' raw per-request values (`summary["samples"]`, attached by the search's measure):
  order-statistic for a percentile, bootstrap for a mean, Wilson for the error rate;
- one run's stored interval (`summary["intervals"]["figures"]["ttft_ms.p99"]`);
- several runs' values: Student t across them;
- else the value alone, a zero-width interval: the old exact verdict (scripted servers).
An error-rate limit of 0 is judged on the count: no interval can show a rate is exactly 0."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from servebench.analysis import metrics, steady
from servebench.analysis.intervals import binomial_ci, bootstrap_ci, quantile_ci, repeats_ci
from servebench.store.runfiles import load_records

if TYPE_CHECKING:
    from servebench.records import RequestRecord
    from servebench.sweep.slo_bounds import Bound

MET, MISSED, UNDECIDED = "met", "missed", "undecided"


def samples(records: Sequence[RequestRecord], steady_block: dict | None = None) -> dict[str, list[float]]:
    """Per-request values (ms) of every latency an SLO can bound, as metrics.summarize takes
    them: measured (not warm-up), successful requests only; inside the run's steady-state
    window when its summary applied one (`steady_state` block), as its figures were."""
    measured = [r for r in records if not r.warmup and (r.sent_ns or r.error)]
    if steady_block and steady_block.get("applied"):
        t0 = min((r.sent_ns for r in measured if r.sent_ns), default=0)
        win = steady.Window(True, t0 + int(steady_block["start_offset_ns"]), t0 + int(steady_block["end_offset_ns"]), "")
        measured = steady.keep(measured, win)
    ok = [r for r in measured if r.sent_ns and r.ok]
    per_tok = [(r, n) for r in ok if (n := metrics.output_tokens(r)) > 0]
    return {
        "ttft_ms": [v / metrics.MS for r in ok if (v := metrics.ttft_ns(r)) is not None],
        "tpot_ms": [v / metrics.MS for r in ok if (v := metrics.tpot_ns(r)) is not None],
        "itl_ms": [g / metrics.MS for r in ok for g in metrics.itl_gaps_ns(r)],
        "e2e_ms": [metrics.e2e_ns(r) / metrics.MS for r in ok],
        "ms_per_token": [metrics.e2e_ns(r) / metrics.MS / n for r, n in per_tok],
        # (sum of gaps ms, gaps) per request: the ITL mean's interval resamples requests, as
        # the run's own does (a slow request has slow gaps: the gaps are not independent)
        "itl_ms_by_request": [[sum(g) / metrics.MS, len(g)] for r in ok if (g := metrics.itl_gaps_ns(r))],
    }


def with_samples(summary: dict | None, run_dir: Path) -> dict | None:
    """The summary with its requests' latencies beside it (`samples`), read from the run's
    requests.parquet; as it was when that file is missing or damaged (then judged on the
    summary's own figures)."""
    path = Path(run_dir) / "requests.parquet"
    if summary is None or not path.exists():
        return summary
    try:
        return {**summary, "samples": samples(load_records(path), summary.get("steady_state"))}
    except Exception:  # noqa: BLE001 - a damaged file costs the interval, not the search
        return summary


def _interval(b: Bound, runs: list[dict]) -> tuple[float | None, float | None, float | None, str, int]:
    """(value, low, high, method, n) of the bound's figure over the pooled runs."""
    if b.metric == "error_rate":
        k = sum(int(r.get("failed") or 0) for r in runs)
        n = k + sum(int(r.get("completed") or 0) for r in runs)
        rate = k / n if n else None
        if b.limit <= 0 or rate is None:
            return rate, rate, rate, "count", n
        ci = binomial_ci(k, n)
        return rate, ci.low, ci.high, ci.method, n
    raw = [(r.get("samples") or {}).get(b.metric) for r in runs]
    if all(v is not None for v in raw):
        pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in raw])
        if pooled.size == 0:
            return None, None, None, "none", 0
        if b.stat == "max":
            v = float(pooled.max())
            return v, v, v, "max", int(pooled.size)
        if b.stat == "mean" and b.metric == "itl_ms":
            return _itl_mean(runs, float(pooled.mean()))
        if b.stat == "mean":
            ci = bootstrap_ci(pooled)
            return float(pooled.mean()), ci.low, ci.high, ci.method, ci.n
        pct = float(b.stat[1:])
        ci = quantile_ci(pooled, pct)
        return float(np.percentile(pooled, pct)), ci.low, ci.high, ci.method, ci.n
    values = [b.value(r) for r in runs]
    if any(v is None for v in values):
        return None, None, None, "none", 0
    if len(runs) == 1:
        fig = ((runs[0].get("intervals") or {}).get("figures") or {}).get(b.name)
        if fig and (fig.get("low") is not None or fig.get("high") is not None):
            return values[0], fig.get("low"), fig.get("high"), fig.get("method") or "stored", int(fig.get("n") or 0)
        return values[0], values[0], values[0], "value", 1
    ci = repeats_ci(values)
    return float(np.mean(values)), ci.low, ci.high, ci.method, ci.n


def _itl_mean(runs: list[dict], value: float) -> tuple[float | None, float | None, float | None, str, int]:
    """The pooled ITL mean with a bootstrap over requests (sum of gaps / gaps), as
    analysis/run_intervals.py gives a run's own; over gaps when a run has no per-request sums."""
    per = [(r.get("samples") or {}).get("itl_ms_by_request") for r in runs]
    if any(p is None for p in per):
        ci = bootstrap_ci(np.concatenate([np.asarray(r["samples"]["itl_ms"], dtype=np.float64) for r in runs]))
        return value, ci.low, ci.high, ci.method, ci.n
    rows = np.asarray([x for p in per for x in p], dtype=np.float64).reshape(-1, 2)
    s, c = rows[:, 0], rows[:, 1]
    ci = bootstrap_ci(np.arange(len(s), dtype=np.float64),
                      lambda m: s[m.astype(np.int64)].sum(axis=1) / c[m.astype(np.int64)].sum(axis=1))
    return value, ci.low, ci.high, ci.method, int(c.sum())


def judge_bound(b: Bound, runs: list[dict]) -> dict:
    value, low, high, method, n = _interval(b, runs)

    def within(x: float) -> bool:
        return x <= b.limit if b.op == "<=" else x < b.limit

    if value is None:  # nothing measured is never a pass
        verdict = MISSED
    elif high is not None and within(high):
        verdict = MET
    elif low is not None and not within(low):
        verdict = MISSED
    else:
        verdict = UNDECIDED
    return {"bound": f"{b.name}{b.op}{b.limit:g}", "value": value, "low": low, "high": high,
            "method": method, "n": n, "verdict": verdict}


def judge(bounds: list[Bound], runs: list[dict | None]) -> tuple[str, list[dict]]:
    """(verdict, one row per bound) for a level's runs. A run that could not be measured, or
    where nothing completed, is a miss: it failed, whatever its latencies."""
    if not runs or any(r is None or not r.get("completed") for r in runs):
        return MISSED, []
    rows = [judge_bound(b, runs) for b in bounds]  # type: ignore[arg-type]
    verdicts = {r["verdict"] for r in rows}
    verdict = MISSED if MISSED in verdicts else UNDECIDED if UNDECIDED in verdicts else MET
    return verdict, rows
