"""The client verdict: a pure function of recorded stats, each threshold tested on both sides."""

from __future__ import annotations

import pytest

from servebench.analysis.client_check import CPU_PER_PROCESS_MAX, LOOP_LAG_P99_MS, judge, warning


def summary(loop=1.0, read=0.3, cores=0.3, workers=1, read_max=2.0, itl=10.0, tpot=None):
    return {"loop_lag_ms": None if loop is None else {"p99": loop},
            "read_lag_ms": None if read is None else {"p99": read, "max": read_max},
            "itl_ms": {"p50": itl}, "client": {"cpu_cores": cores, "workers": workers},
            **({"tpot_ms": {"p50": tpot}} if tpot is not None else {})}


def test_a_client_well_inside_every_limit_kept_up():
    v = judge(summary())
    assert v["kept_up"] is True and v["reasons"] == [] and warning(v) is None
    assert set(v["checks"]) == {"loop_lag_p99_ms", "read_lag_max_ms", "cpu_cores_per_process"}


@pytest.mark.parametrize("field,limit", [("loop", LOOP_LAG_P99_MS), ("read_max", 10.0),
                                         ("cores", CPU_PER_PROCESS_MAX)])
def test_each_threshold_on_both_sides(field, limit):
    at = judge(summary(**{field: limit}))
    over = judge(summary(**{field: limit * 1.01}))
    assert at["kept_up"] is True
    assert over["kept_up"] is False and len(over["reasons"]) == 1
    w = warning(over)
    assert w.startswith("client did not keep up (") and "\n" not in w


def test_one_stall_longer_than_the_token_gap_is_caught_even_when_the_p99_is_fine():
    # the burst rerun: read lag p99 3.4 ms, max 19 ms, ITL 10 ms: one token per stream read late
    assert judge(summary(read=3.4, read_max=9.9))["kept_up"] is True
    v = judge(summary(read=3.4, read_max=10.1))
    assert v["kept_up"] is False and v["reasons"] == [
        "a read waited 10.1 ms, longer than the median gap between tokens (TPOT p50 10.0 ms)"]
    assert judge(summary(read=3.4, read_max=19.0, itl=50.0))["kept_up"] is True  # a slower server


def test_cpu_is_judged_per_load_process():
    # 1.5 cores over 2 workers is 0.75 each: fine; over 1 process it is saturation
    assert judge(summary(cores=1.5, workers=2))["kept_up"] is True
    assert judge(summary(cores=1.5, workers=1))["kept_up"] is False


def test_the_issue_runs_that_must_warn():
    # starved by a real-time neighbour: loop lag p99 24 ms; 5000 streams on one process: 1636 ms
    assert judge(summary(loop=24.0))["kept_up"] is False
    assert judge(summary(loop=1636.0, cores=1.0))["reasons"] == [
        "event-loop lag p99 1636.0 ms > 10 ms", "CPU 1.00 cores per load process > 0.9"]


def test_missing_inputs_are_left_out_not_guessed():
    v = judge(summary(loop=None, read=None))  # https: no kernel stamps, no read lag
    assert set(v["checks"]) == {"cpu_cores_per_process"} and v["kept_up"] is True
    assert judge({})["kept_up"] is None and warning(judge({})) is None


def test_token_gap_is_tpot_so_a_server_writing_tokens_together_is_not_blamed_on_the_client():
    # measured: the emulator behind at 50k tokens/s wrote tokens in bunches (ITL p50 0.0 ms);
    # the client read within 1.2 ms and every token time was exact (ITL error p99 0.01 ms)
    assert judge(summary(read_max=1.2, itl=0.0, tpot=10.0))["kept_up"] is True
    v = judge(summary(read_max=25.0, itl=0.0, tpot=10.0))  # a client 25 ms behind still is
    assert v["kept_up"] is False and "TPOT p50 10.0 ms" in v["reasons"][0]
    assert judge(summary(read_max=1.2, itl=0.0, tpot=None))["kept_up"] is False  # old summary: ITL median
