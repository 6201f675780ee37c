"""summary.json's intervals block and the steady-state window, on scripted records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from servebench.analysis.metrics import summarize
from servebench.analysis.run_intervals import batch_means
from servebench.analysis.steady import find
from servebench.records import RequestRecord

MS = 1_000_000
B = 10**12


def rec(i, sent, ttft_ms, n_tok, gap_ms, *, ok=True):
    toks = [sent + int(ttft_ms * MS) + j * int(gap_ms * MS) for j in range(n_tok)]
    return RequestRecord(index=i, input_tokens=8, output_tokens=n_tok, scheduled_ns=sent, slot_ns=sent, sent_ns=sent,
                         end_ns=toks[-1], status=200 if ok else 500, error=None if ok else "boom",
                         token_ns=toks, token_counts=[1] * n_tok, server_output_tokens=n_tok)


def closed_loop(n, c, *, seed=0):
    """n requests at concurrency c: each slot sends its next request when its last ends."""
    rng = np.random.default_rng(seed)
    free = [B + k * 5 * MS for k in range(c)]  # slots open 5 ms apart: a ramp-up
    out = []
    for i in range(n):
        k = int(np.argmin(free))
        r = rec(i, free[k], float(rng.uniform(20, 80)), 16, float(rng.uniform(2, 6)))
        out.append(r)
        free[k] = r.end_ns
    return out


def test_every_headline_figure_has_an_interval_that_holds_its_value():
    recs = closed_loop(400, 4)
    s = summarize(recs, target_concurrency=4)
    iv = s["intervals"]
    assert iv["level"] == 0.95
    figs = iv["figures"]
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token"):
        for st in ("mean", "p50", "p90", "p95", "p99"):
            f = figs[f"{m}.{st}"]
            assert set(f) == {"low", "high", "method", "n"}
            assert f["method"] == ("bootstrap" if st == "mean" else "order-statistic")
            assert f["low"] <= s[m][st] <= f["high"], (m, st)
    for k in ("request_throughput", "output_token_throughput"):
        f = figs[k]
        assert f["method"] == "batch-means" and f["n"] == 10
        assert f["low"] < s[k] < f["high"]
    assert figs["ttft_ms.p50"]["n"] == 400
    assert figs["itl_ms.mean"]["n"] == 400 * 15  # gaps, resampled by request
    json.dumps(s, allow_nan=False)  # the block is valid JSON


def test_intervals_are_seeded_and_narrow_with_more_requests():
    a = summarize(closed_loop(200, 4))["intervals"]["figures"]
    assert a == summarize(closed_loop(200, 4))["intervals"]["figures"]
    big = summarize(closed_loop(3000, 4))["intervals"]["figures"]
    width = lambda f: f["high"] - f["low"]  # noqa: E731
    assert width(big["ttft_ms.mean"]) < width(a["ttft_ms.mean"])
    assert width(big["e2e_ms.p50"]) < width(a["e2e_ms.p50"])


def test_p99_of_few_requests_is_open_above():
    s = summarize(closed_loop(50, 2))
    assert s["intervals"]["figures"]["ttft_ms.p99"]["high"] is None


def test_batch_means_equals_the_run_rate_and_sees_an_uneven_rate():
    start, end = 0, 10 * 10**9
    even = [int((i + 0.5) * 10**8) for i in range(100)]  # one completion every 0.1 s
    iv = batch_means(even, [1.0] * 100, start, end)
    assert iv.low == pytest.approx(10.0) and iv.high == pytest.approx(10.0)
    bunched = [int(i * 5 * 10**7) for i in range(100)]  # all in the first half
    iv = batch_means(bunched, [1.0] * 100, start, end)
    assert iv.low < 10.0 < iv.high and iv.high - iv.low > 5


def test_too_few_completions_give_no_throughput_interval():
    iv = batch_means([1, 2, 3], [1.0] * 3, 0, 10)
    assert iv.low is None and iv.high is None and iv.method == "batch-means"


def test_no_requests_gives_null_bounds():
    s = summarize([])
    f = s["intervals"]["figures"]
    assert f["ttft_ms.p50"]["low"] is None and f["request_throughput"]["high"] is None


def test_steady_state_off_leaves_the_summary_as_it_was():
    recs = closed_loop(100, 4)
    s = summarize(recs, target_concurrency=4)
    assert "steady_state" not in s and s["completed"] == 100


def test_steady_state_window_keeps_requests_sent_between_target_and_last_release():
    recs = closed_loop(100, 4)
    w = find(recs, 4, None)
    assert w.applied and w.start_ns == B + 15 * MS  # the fourth slot opened: 4 in flight
    assert w.end_ns == max(r.sent_ns for r in recs)  # the last release
    s = summarize(recs, target_concurrency=4, steady_state=True)
    ss = s["steady_state"]
    kept = [r for r in recs if w.start_ns <= r.sent_ns <= w.end_ns]
    assert ss["applied"] and ss["requests_kept"] == len(kept) == s["completed"]
    assert ss["requests_left_out"] == 100 - len(kept) == 3  # the first three, sent during the ramp
    assert ss["start_offset_ns"] == 15 * MS and ss["end_offset_ns"] == w.end_ns - B
    done = [r for r in recs if w.start_ns <= r.end_ns <= w.end_ns]
    assert s["request_throughput"] == pytest.approx(len(done) / ((w.end_ns - w.start_ns) / 1e9))
    assert s["duration_s"] == pytest.approx((w.end_ns - w.start_ns) / 1e9)
    assert s["intervals"]["figures"]["ttft_ms.p50"]["n"] == len(kept)


def test_steady_state_without_a_target_says_so_and_keeps_all():
    recs = closed_loop(20, 20)  # a burst-like load: never a target
    s = summarize(recs, steady_state=True)
    assert s["steady_state"]["applied"] is False and "burst" in s["steady_state"]["rule"]
    assert s["completed"] == 20
    s = summarize(closed_loop(3, 3), target_concurrency=8, steady_state=True)
    assert s["steady_state"]["applied"] is False and "never reached 8" in s["steady_state"]["rule"]


def test_steady_state_at_a_rate_starts_when_in_flight_settles():
    recs = [rec(i, B + i * 100 * MS, 50, 8, 20) for i in range(50)]  # 2 in flight once going
    w = find(recs, None, 10.0)
    assert w.applied and w.start_ns == recs[1].sent_ns and "settled level 2" in w.rule


def test_steady_state_keeps_the_long_requests_in_flight_at_the_close():
    """A long request is in flight more of the time, so the ones still running at the last
    release are mostly long: leaving them out biased the window's latencies low."""
    out, free = [], [B + k * 5 * MS for k in range(16)]
    for i in range(200):
        k = int(np.argmin(free))
        out.append(rec(i, free[k], 30, 128 if i % 4 == 0 else 8, 4))
        free[k] = out[-1].end_ns
    s = summarize(out, target_concurrency=16, steady_state=True)
    w = find(out, 16, None)
    sent_in = [r for r in out if w.start_ns <= r.sent_ns <= w.end_ns]
    assert s["completed"] == len(sent_in)
    assert s["e2e_ms"]["mean"] == pytest.approx(np.mean([(r.end_ns - r.sent_ns) / MS for r in sent_in]))
