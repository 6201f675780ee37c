"""Metrics under a scripted clock: every expected value follows from the timestamps."""

from __future__ import annotations

import pytest

from servebench.analysis.metrics import dist, in_flight, itl_gaps_ns, summarize, tpot_ns, ttft_ns
from servebench.records import RequestRecord

MS = 1_000_000
B = 10**12  # perf_counter_ns never starts at 0; records with sent_ns == 0 were never sent


def rec(i, sent, tokens, end, *, counts=None, server_out=None, server_in=None, req_out=None, status=200, warmup=False, error=None):
    return RequestRecord(
        index=i, warmup=warmup, input_tokens=8, output_tokens=req_out if req_out is not None else sum(counts or [1] * len(tokens)),
        scheduled_ns=sent, slot_ns=sent, sent_ns=sent, end_ns=end, status=status, error=error,
        token_ns=list(tokens), token_counts=list(counts or [1] * len(tokens)),
        server_output_tokens=server_out, server_input_tokens=server_in,
    )


def test_e2e_minus_ttft_equals_sum_of_itl_plus_tail():
    r = rec(0, 1000 * MS, [1050 * MS, 1060 * MS, 1075 * MS, 1081 * MS], 1081 * MS)
    assert ttft_ns(r) == 50 * MS
    gaps = itl_gaps_ns(r)
    assert gaps == [10 * MS, 15 * MS, 6 * MS]
    assert (r.end_ns - r.sent_ns) - ttft_ns(r) == sum(gaps)  # end at the last token: exact
    r.end_ns += 2 * MS  # usage chunk / [DONE] after the last token: the tail
    assert (r.end_ns - r.sent_ns) - ttft_ns(r) == sum(gaps) + (r.end_ns - r.token_ns[-1])


def test_multi_token_event_splits_its_gap():
    r = rec(0, 0, [50 * MS, 80 * MS], 80 * MS, counts=[1, 3])
    assert itl_gaps_ns(r) == [10 * MS, 10 * MS, 10 * MS]
    assert tpot_ns(r) == pytest.approx(30 * MS / 3)


def test_summary_numbers_follow_from_timestamps():
    recs = [
        rec(0, B, [B + 50 * MS, B + 60 * MS, B + 70 * MS], B + 70 * MS, server_out=3, server_in=8),
        rec(1, B + 10 * MS, [B + 90 * MS, B + 110 * MS, B + 130 * MS], B + 130 * MS, server_out=3, server_in=8),
        rec(2, B + 20 * MS, [], B + 40 * MS, status=500, error="HTTP 500: boom"),
        rec(3, B - 100 * MS, [B - 90 * MS], B - 80 * MS, warmup=True),
    ]
    s = summarize(recs, target_concurrency=2)
    assert s["completed"] == 2 and s["failed"] == 1 and s["error_rate"] == pytest.approx(1 / 3)
    assert s["errors"] == {"HTTP 500: boom": 1}
    assert s["duration_s"] == pytest.approx(0.130)  # first send (0) to last end (130 ms), warm-up excluded
    assert s["output_token_throughput"] == pytest.approx(6 / 0.130)
    assert s["total_token_throughput"] == pytest.approx((6 + 16) / 0.130)
    assert s["request_throughput"] == pytest.approx(2 / 0.130)
    assert s["ttft_ms"]["mean"] == pytest.approx(65.0) and s["ttft_ms"]["p50"] == pytest.approx(65.0)
    assert s["itl_ms"]["mean"] == pytest.approx(15.0)  # gaps 10,10,20,20
    assert s["e2e_ms"]["mean"] == pytest.approx(95.0)  # 70 and 120
    assert s["tpot_ms"]["mean"] == pytest.approx(((70 - 50) / 2 + (120 - 80) / 2) / 2)
    assert s["ms_per_token"]["mean"] == pytest.approx((70 / 3 + 120 / 3) / 2)
    assert s["output_tokens"]["shortfall_requests"] == 0 and s["output_tokens"]["count_mismatches"] == 0
    # in flight: [0,70] one, [10,130] one, [20,40] one -> area 70+120+20=210 ms over 130 ms
    assert s["concurrency"]["mean_in_flight"] == pytest.approx(210 / 130)
    assert s["concurrency"]["max_in_flight"] == 3


def test_server_count_preferred_and_mismatch_and_shortfall_flagged():
    r1 = rec(0, B, [B + 10 * MS, B + 20 * MS], B + 20 * MS, server_out=3, req_out=4)  # 2 chunks, server says 3
    r2 = rec(1, B, [B + 10 * MS, B + 20 * MS], B + 20 * MS, server_out=None, req_out=2)
    s = summarize([r1, r2])
    assert s["output_tokens"]["total"] == 5
    assert s["output_tokens"]["count_mismatches"] == 1
    assert s["output_tokens"]["shortfall_requests"] == 1
    assert s["output_tokens"]["streamed_total"] == 4
    # r2's count came from its chunks (no usage from the server): marked client-counted
    assert s["output_tokens"]["server_reported"] == 1 and s["output_tokens"]["client_counted"] == 1


def test_dist_percentiles_and_empty():
    d = dist(list(range(1, 101)))
    assert d["p50"] == pytest.approx(50.5) and d["p99"] == pytest.approx(99.01) and d["mean"] == 50.5
    assert dist([])["mean"] is None


def test_in_flight_clips_to_window():
    recs = [rec(0, B, [], B + 100), rec(1, B + 50, [], B + 150)]
    f = in_flight(recs, B, B + 150)
    assert f["max"] == 2 and f["mean"] == pytest.approx(200 / 150)


def test_in_flight_peak_is_the_windows_own():
    """A steady-state window's max in flight counted a level reached only before it (the ramp's
    overlap of early requests) or at its end: 3 here, where the window never held more than 2."""
    recs = [rec(0, B, [], B + 150), rec(1, B + 10, [], B + 90), rec(2, B + 50, [], B + 120),
            rec(3, B + 200, [], B + 300), rec(4, B + 200, [], B + 300)]
    f = in_flight(recs, B + 100, B + 200)
    assert f["max"] == 2  # the first and third at the window's start
    assert f["mean"] == pytest.approx((2 * 20 + 1 * 30) / 100)
    assert in_flight(recs, B + 130, B + 140)["max"] == 1  # held all through, no event inside
    assert in_flight(recs, B, B + 400)["max"] == 3
