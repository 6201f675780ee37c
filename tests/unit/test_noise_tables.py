"""Intervals in the run table (the run's own, or across repeats) and the tie rule of the
recommend, comparison and sweep-compare tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from servebench.analysis.intervals import Interval, repeats_ci
from servebench.decide.load import load_dirs, merge_repeats
from servebench.decide.recommend import study_tables
from servebench.outputs.summary_tables import comparison_table
from servebench.sweep.compare import COLUMNS, Row, _winners

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"


def test_run_table_carries_each_runs_own_intervals():
    df = load_dirs([str(SWEEP)])
    r = df[df["cell"] == "g00-c020-r0"].iloc[0]
    figs = json.loads((SWEEP / "runs/g00-c020-r0/summary.json").read_text())["intervals"]["figures"]
    assert r["ci"] == "run"
    assert r["ttft_ms_p99_ci_low"] == figs["ttft_ms.p99"]["low"]
    assert r["ms_per_token_p50_ci_high"] == figs["ms_per_token.p50"]["high"]
    assert r["request_throughput_ci_low"] == figs["request_throughput"]["low"]
    assert r["ttft_ms_p50_ci_low"] <= r["ttft_ms_p50"] <= r["ttft_ms_p50_ci_high"]


def _rows(values, repeat=True):
    base = {"source": "s", "config": "vllm/tiny/cpu", "mode": "concurrency", "concurrency": 4, "rate": None,
            "speed": None, "requests": 100, "input_tokens": 64, "output_tokens": 32, "status": "complete",
            "completed": 100, "cell": "c", "ci": "run"}
    return pd.DataFrame([{**base, "repeat": i if repeat else 0, "output_token_throughput": v,
                          "output_token_throughput_ci_low": v - 1, "output_token_throughput_ci_high": v + 1}
                         for i, v in enumerate(values)])


def test_repeats_give_a_student_t_interval_across_them():
    m = merge_repeats(_rows([100.0, 110.0, 105.0]))
    assert len(m) == 1 and m["repeats"].iloc[0] == 3 and m["ci"].iloc[0] == "repeats"
    iv = repeats_ci([100.0, 110.0, 105.0])
    assert m["output_token_throughput_ci_low"].iloc[0] == pytest.approx(iv.low)
    assert m["output_token_throughput_ci_high"].iloc[0] == pytest.approx(iv.high)
    assert m["output_token_throughput"].iloc[0] == pytest.approx(105.0)


def test_a_single_run_keeps_its_own_interval():
    m = merge_repeats(_rows([100.0], repeat=False))
    assert m["ci"].iloc[0] == "run" and m["output_token_throughput_ci_low"].iloc[0] == 99.0


def _ranked(a_tps, a_ci, b_tps, b_ci):
    rows = []
    for name, tps, (lo, hi) in (("a/tiny/cpu", a_tps, a_ci), ("b/tiny/cpu", b_tps, b_ci)):
        rows.append({"family": "tiny", "model": "tiny", "quantization": None, "where": "cpu", "config": name,
                     "load_level": "4 concurrent", "concurrency": 4, "status": "complete", "completed": 100,
                     "ms_per_token_p50": 10.0, "output_token_throughput": tps, "usd_per_hour": 1.0,
                     "min_per_1m": 1.0, "usd_per_1m": 1.0 / tps, "ci": "run",
                     "output_token_throughput_ci_low": lo, "output_token_throughput_ci_high": hi})
    return pd.DataFrame(rows)


def test_recommend_calls_overlapping_intervals_a_tie_and_says_by_how_much():
    t = {x.key: x for x in study_tables(_ranked(104.0, (98.0, 110.0), 100.0, (94.0, 106.0)))}["throughput"]
    row = t.df.iloc[0]
    assert row["config"] == "a/tiny/cpu" and row["vs_next"] == "tie (±10 %)"  # (104-94)/104
    assert any("tie (±10 %) on output_token_throughput" in n and "b/tiny/cpu" in n for n in t.notes)


def test_recommend_names_a_winner_when_intervals_do_not_overlap():
    t = {x.key: x for x in study_tables(_ranked(120.0, (115.0, 125.0), 100.0, (95.0, 105.0)))}["throughput"]
    assert t.df.iloc[0]["vs_next"] == "winner" and not any("tie" in n for n in t.notes)


def test_recommendation_and_comparison_tables_head_their_verdicts_apart():
    """The recommendation row is judged against the next best configuration, the comparison row
    against the baseline run: each column's heading says which, in every format."""
    from servebench.outputs import render

    rec = {x.key: x for x in study_tables(_ranked(120.0, (115.0, 125.0), 100.0, (95.0, 105.0)))}["throughput"]
    cmp = comparison_table(pd.DataFrame([_compare_row("A", True, (99.0, 101.0)), _compare_row("B", False, (103.0, 105.0))]))
    md = render.markdown([rec, cmp])
    rec_md, cmp_md = md.split(f"## {cmp.title}")
    assert "| vs next best |" in rec_md and "vs baseline" not in rec_md
    assert "| vs baseline |" in cmp_md and "vs next best" not in cmp_md
    assert "verdict" not in rec.df.columns and "vs_next" not in cmp.df.columns  # the CSV's columns kept apart too


def _compare_row(source, baseline, ci):
    return {"config": "vllm/tiny/cpu", "load_level": "4 concurrent", "mode": "concurrency", "concurrency": 4,
            "rate": None, "speed": None, "requests": 100, "input_tokens": 64, "output_tokens": 32,
            "status": "complete", "ms_per_token_p50": 10.0, "usd_per_1m": None, "ci": "run", "source": source,
            "baseline": baseline, "output_token_throughput": 100.0 if baseline else 104.0,
            "output_token_throughput_ci_low": ci[0], "output_token_throughput_ci_high": ci[1]}


def _compare(b_ci, r_ci):
    return comparison_table(pd.DataFrame([_compare_row("A", True, b_ci), _compare_row("B", False, r_ci)])).df.iloc[0]


def test_report_diff_is_a_tie_when_intervals_overlap():
    row = _compare((94.0, 106.0), (98.0, 110.0))
    assert row["delta_throughput_pct"] == pytest.approx(4.0)
    assert row["verdict"] == "tie: throughput (±10 %)"  # (110-100)/100


def test_report_diff_is_better_when_intervals_do_not_overlap():
    assert _compare((99.0, 101.0), (103.0, 105.0))["verdict"] == "better: throughput"


def test_report_diff_without_intervals_keeps_the_old_verdict():
    assert _compare((None, None), (None, None))["verdict"] == "better: throughput"


def test_sweep_compare_marks_overlapping_rows_as_sharing_the_win():
    j = [c[0] for c in COLUMNS].index("req/s")
    vals = lambda v: [v if k == j else None for k in range(len(COLUMNS))]  # noqa: E731
    cis = lambda iv: [iv if k == j else None for k in range(len(COLUMNS))]  # noqa: E731
    a = Row("a", "done", vals(10.0), "", cis(Interval(9.0, 11.0, "batch-means", 10)))
    b = Row("b", "done", vals(9.6), "", cis(Interval(8.8, 10.4, "batch-means", 10)))
    c = Row("c", "done", vals(5.0), "", cis(Interval(4.5, 5.5, "batch-means", 10)))
    wins, ties = _winners([a, b, c])
    assert wins["req/s"] == ["a", "b"] and ties["req/s"] == "tie (±12 %)"  # (10-8.8)/10
    wins, ties = _winners([a, c])
    assert wins["req/s"] == ["a"] and "req/s" not in ties
