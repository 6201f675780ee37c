"""Find-the-limit search on a scripted server whose SLO breaks at a known level."""

from __future__ import annotations

import pytest

from servebench.sweep.limit import meets, parse_slo, search


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
    assert len(calls) == len(set(calls))  # no level measured twice
    assert len(calls) <= 2 * (limit.bit_length() + 1)  # doubling then bisection


def test_search_when_even_the_start_misses_or_the_cap_is_met():
    calls: list = []
    res = search(server(0, calls), parse_slo("ttft_p99<=500ms"), start=1)
    assert res.best is None and res.first_fail == 1 and calls == [1]
    res = search(server(10_000, []), parse_slo("ttft_p99<=500ms"), start=4, max_level=48)
    assert res.best == 48 and res.first_fail is None


def test_rate_search_brackets_within_ten_percent():
    res = search(server(7.3, []), parse_slo("ttft_p99<=500ms"), start=1.0, max_level=100, integer=False)
    assert res.best <= 7.3 < res.first_fail and res.first_fail <= res.best * 1.1


def test_unmeasurable_level_counts_as_a_miss():
    res = search(lambda lv: None if lv > 2 else {"completed": 1, "ttft_ms": {"p99": 1.0}},
                 parse_slo("ttft_p99<=500ms"), start=1)
    assert res.best == 2 and res.first_fail == 3
