"""Find-the-limit search on a scripted server whose SLO breaks at a known level: sharp (every
level clearly met or missed: the exact answer) or blurred by the noise of a few hundred
requests (a range that holds the true limit, with repeats only at its boundary)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servebench.analysis.intervals import binomial_ci
from servebench.sweep.judge import MET, MISSED, UNDECIDED, judge
from servebench.store.limitblock import describe
from servebench.sweep.limit import block, meets, search
from servebench.sweep.slo_bounds import parse_slo


def server(limit: float, calls: list):
    """TTFT p99 grows past 500 ms beyond `limit`."""

    def measure(level):
        calls.append(level)
        return {"completed": 10, "ttft_ms": {"p99": 100.0 if level <= limit else 900.0}, "error_rate": 0.0}

    return measure


def test_parse_slo_units_and_errors():
    b = parse_slo("ttft_p99<=0.5s, tpot_p50<50ms,error_rate<=0.01")
    assert [(x.metric, x.stat, x.op, x.limit) for x in b] == [
        ("ttft_ms", "p99", "<=", 500.0), ("tpot_ms", "p50", "<", 50.0), ("error_rate", "", "<=", 0.01)]
    with pytest.raises(ValueError, match="bad SLO term"):
        parse_slo("throughput>=5")
    with pytest.raises(ValueError, match="empty"):
        parse_slo(" , ")


def test_meets_needs_every_bound_and_a_completed_request():
    b = parse_slo("ttft_p99<=500ms,e2e_p50<=1s")
    assert meets(b, {"completed": 3, "ttft_ms": {"p99": 500.0}, "e2e_ms": {"p50": 999.0}})
    assert not meets(b, {"completed": 3, "ttft_ms": {"p99": 501.0}, "e2e_ms": {"p50": 10.0}})
    assert not meets(b, {"completed": 3, "ttft_ms": {"p99": None}, "e2e_ms": {"p50": 10.0}})
    assert not meets(b, {"completed": 0, "ttft_ms": {"p99": 1.0}, "e2e_ms": {"p50": 1.0}})


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 12, 40, 63, 64, 65])
def test_concurrency_search_finds_the_exact_limit(limit):
    calls: list = []
    res = search(server(limit, calls), parse_slo("ttft_p99<=500ms"), start=1, max_level=1024)
    assert res.best == limit and res.first_fail == limit + 1
    assert res.exact and res.low == res.high == limit
    assert len(calls) == len(set(calls))  # no level measured twice
    assert len(calls) <= 2 * (limit.bit_length() + 1)  # doubling then bisection


def test_search_when_even_the_start_misses_or_the_cap_is_met():
    calls: list = []
    res = search(server(0, calls), parse_slo("ttft_p99<=500ms"), start=1)
    assert res.best is None and res.first_fail == 1 and calls == [1]
    assert res.high is None and describe(block(res, "s", "concurrency", 3)) == "none (even 1 missed)"
    res = search(server(10_000, []), parse_slo("ttft_p99<=500ms"), start=4, max_level=48)
    assert res.best == 48 and res.first_fail is None
    assert describe(block(res, "s", "concurrency", 3)) == "48 (none missed up to the search's cap)"


def test_rate_search_brackets_within_ten_percent():
    res = search(server(7.3, []), parse_slo("ttft_p99<=500ms"), start=1.0, max_level=100, integer=False)
    assert res.best <= 7.3 < res.first_fail and res.first_fail <= res.best * 1.1


def test_unmeasurable_level_counts_as_a_miss():
    res = search(lambda lv: None if lv > 2 else {"completed": 1, "ttft_ms": {"p99": 1.0}},
                 parse_slo("ttft_p99<=500ms"), start=1)
    assert res.best == 2 and res.first_fail == 3


def noisy(true_limit: float, calls: list, per_stream: int = 2, floor: int = 20):
    """TTFT exponential with a p99 of 300 ms x (level / true_limit)^2, `per_stream` requests a
    stream (at least `floor`): the p99 of a few hundred requests is blurred near the limit.
    Seeded per (level, repeat): the same script always gives the same run."""

    def measure(level, repeat=0):
        calls.append((level, repeat))
        n = max(floor, per_stream * int(level))
        p99 = 300.0 * (level / true_limit) ** 2
        vals = np.random.default_rng(int(level * 1000) * 31 + repeat).exponential(p99 / math.log(100), n)
        return {"completed": n, "failed": 0, "ttft_ms": {"p99": float(np.percentile(vals, 99))},
                "samples": {"ttft_ms": vals.tolist()}}

    return measure


@pytest.mark.parametrize("true_limit, per_stream", [(120.5, 2), (200.9, 2), (64.3, 4), (33.7, 8)])
def test_a_blurred_boundary_gives_a_range_holding_the_true_limit(true_limit, per_stream):
    calls: list = []
    res = search(noisy(true_limit, calls, per_stream), parse_slo("ttft_p99<=300ms"), start=1, max_level=1024)
    truth = math.floor(true_limit)  # the highest level whose true p99 is within 300 ms
    assert res.low is not None and res.low <= truth <= res.high
    assert res.low < res.high and not res.exact  # the noise is not hidden behind one number
    assert res.high == res.first_fail - 1 and res.high - res.low <= 0.35 * truth  # a usable range
    # repeats only at the boundary: the doubling ladder under it ran once per level
    repeated = {lv for lv, r in calls if r > 0}
    assert repeated and all(res.low / 2 <= lv <= res.first_fail + res.first_fail / 2 for lv in repeated)
    assert all(n == 1 for lv, n in _runs(calls).items() if lv < res.low / 2)
    assert max(_runs(calls).values()) == 3 and len(calls) == len(set(calls))  # 3 runs at most, never one twice
    text = describe(block(res, "ttft_p99<=300ms", "concurrency", 3))
    assert text == f"{res.low:g}-{res.high:g} (95 %; first missing: {res.first_fail:g})"


def _runs(calls: list) -> dict:
    out: dict = {}
    for lv, _ in calls:
        out[lv] = out.get(lv, 0) + 1
    return out


def test_a_sharp_boundary_with_enough_requests_is_exact_and_never_repeated():
    calls: list = []

    def measure(level, repeat=0):
        calls.append((level, repeat))
        vals = [100.0 if level <= 37 else 900.0] * 500  # 500 requests bound a p99 on both sides
        return {"completed": 500, "failed": 0, "ttft_ms": {"p99": vals[0]}, "samples": {"ttft_ms": vals}}

    res = search(measure, parse_slo("ttft_p99<=300ms"), start=1, max_level=1024)
    assert (res.low, res.high, res.first_fail, res.exact) == (37, 37, 38, True)
    assert all(r == 0 for _, r in calls)
    assert describe(block(res, "s", "concurrency", 3)) == "37 (first missing: 38)"


def test_too_few_requests_for_a_p99_say_so_instead_of_a_number():
    calls: list = []
    res = search(noisy(37.2, calls, per_stream=2, floor=4), parse_slo("ttft_p99<=300ms"), start=1, max_level=256)
    assert res.low is None and res.high is not None and res.high >= 37
    b = block(res, "ttft_p99<=300ms", "concurrency", 3)
    assert "needs 368 or more" in b["note"] and describe(b).startswith(f"none shown at 95 %, at most {res.high:g}")
    assert len({lv for lv, r in calls if r > 0}) <= 3  # the walk down stops at the first rung still undecided


def test_repeats_one_judges_each_level_once():
    calls: list = []
    res = search(noisy(120.5, calls), parse_slo("ttft_p99<=300ms"), start=1, repeats=1)
    assert all(r == 0 for _, r in calls) and res.first_fail is not None


def test_rate_search_on_a_blurred_boundary_holds_the_true_rate():
    calls: list = []
    res = search(noisy(60.0, calls, per_stream=6), parse_slo("ttft_p99<=300ms"), start=1.0, max_level=500,
                 integer=False)
    assert res.low <= 60.0 < res.first_fail and res.low <= res.high < res.first_fail


@pytest.mark.parametrize("kw, msg", [
    ({"repeats": 0}, "repeats must be a whole number >= 1, got 0"),
    ({"repeats": 2.5}, "repeats must be a whole number >= 1, got 2.5"),
    ({"start": 0}, "start level must be > 0, got 0"),
    ({"start": 8, "max_level": 4}, "max level 4 is below the start level 8"),
    ({"rel_tol": 0}, "rel_tol must be between 0 and 1, got 0"),
])
def test_bad_search_values_are_one_line_errors(kw, msg):
    with pytest.raises(ValueError) as e:
        search(server(5, []), parse_slo("ttft_p99<=500ms"), **kw)
    assert str(e.value) == f"limit search: {msg}" and "\n" not in str(e.value)


def test_judge_three_ways_on_the_bounds_own_interval():
    ttft = parse_slo("ttft_p99<=300ms")
    under = {"completed": 240, "samples": {"ttft_ms": [100.0] * 240}, "ttft_ms": {"p99": 100.0}}
    # 240 requests cannot bound a p99 from above: far under the limit, still undecided
    assert judge(ttft, [under])[0] == UNDECIDED
    assert judge(ttft, [under, under])[0] == MET  # 480 pooled can
    over = {"completed": 240, "samples": {"ttft_ms": [900.0] * 240}, "ttft_ms": {"p99": 900.0}}
    assert judge(ttft, [over])[0] == MISSED
    verdict, rows = judge(ttft, [under, over])  # half the pooled requests slow: p99 clearly over
    assert verdict == MISSED and rows[0]["method"] == "order-statistic" and rows[0]["n"] == 480
    assert judge(ttft, [under, None])[0] == MISSED  # a repeat that could not be measured
    # no raw values: the run's stored interval, then the value alone (an exact verdict)
    stored = {"completed": 9, "ttft_ms": {"p99": 250.0},
              "intervals": {"figures": {"ttft_ms.p99": {"low": 200.0, "high": 320.0, "method": "order-statistic", "n": 9}}}}
    assert judge(ttft, [stored])[0] == UNDECIDED
    assert judge(ttft, [{"completed": 9, "ttft_ms": {"p99": 250.0}}])[0] == MET


def test_error_rate_is_judged_on_a_binomial_interval():
    b = parse_slo("error_rate<=0.05")
    assert judge(b, [{"completed": 1000, "failed": 0}])[0] == MET
    assert judge(b, [{"completed": 20, "failed": 0}])[0] == UNDECIDED  # 0 of 20 does not show <= 5 %
    assert judge(b, [{"completed": 80, "failed": 20}])[0] == MISSED
    # a zero limit is the count itself: no interval can show a rate is exactly 0
    zero = parse_slo("error_rate<=0")
    assert judge(zero, [{"completed": 20, "failed": 0}])[0] == MET
    assert judge(zero, [{"completed": 20, "failed": 1}])[0] == MISSED
    ci = binomial_ci(0, 20)
    assert ci.low == 0.0 and 0.1 < ci.high < 0.2 and ci.method == "wilson"
    assert binomial_ci(0, 0).high is None


def test_search_samples_are_the_requests_of_a_steady_state_summary():
    """With --steady-state the summary's figures are of its window; the limit search's verdict
    must judge the same requests, not the ramp and drain the window left out."""
    from servebench.analysis.metrics import summarize
    from servebench.records import RequestRecord
    from servebench.sweep.judge import samples

    ms, t0 = 1_000_000, 10**12
    recs, free = [], [t0 + k * 5 * ms for k in range(4)]
    for i in range(60):
        k = int(np.argmin(free))
        sent = free[k]
        toks = [sent + (40 + i) * ms + j * 3 * ms for j in range(8)]
        recs.append(RequestRecord(index=i, input_tokens=8, output_tokens=8, scheduled_ns=sent, sent_ns=sent,
                                  end_ns=toks[-1], status=200, token_ns=toks, token_counts=[1] * 8,
                                  server_output_tokens=8))
        free[k] = toks[-1]
    s = summarize(recs, target_concurrency=4, steady_state=True)
    assert s["steady_state"]["applied"] and s["steady_state"]["requests_left_out"] > 0
    got = samples(recs, s["steady_state"])["ttft_ms"]
    assert len(got) == s["completed"] and float(np.max(got)) == pytest.approx(s["ttft_ms"]["max"])
    assert len(samples(recs)["ttft_ms"]) == 60  # no window: every measured request


def test_itl_mean_bound_resamples_requests_not_gaps():
    """Five fast and five slow requests of 100 gaps each: 1000 gaps look like a tight mean of
    20 ms, but ten requests cannot say it is under 21 ms (the run's own interval resamples
    requests too)."""
    flat = [10.0] * 500 + [30.0] * 500
    by_req = [[1000.0, 100]] * 5 + [[3000.0, 100]] * 5
    run = {"completed": 10, "itl_ms": {"mean": 20.0}, "samples": {"itl_ms": flat, "itl_ms_by_request": by_req}}
    verdict, rows = judge(parse_slo("itl_mean<=21ms"), [run])
    assert verdict == UNDECIDED and rows[0]["high"] > 23 and rows[0]["n"] == 1000
    assert rows[0]["value"] == pytest.approx(20.0)
