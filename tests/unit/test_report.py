"""The report's warnings: each one fires on its condition and stays quiet otherwise."""

from __future__ import annotations

from servebench.outputs.console import warnings


def summary(**over):
    s = {
        "status": "complete", "completed": 100, "failed": 0, "error_rate": 0.0, "errors": {},
        "output_tokens": {"requested_mean": 128.0, "achieved_mean": 128.0, "shortfall_requests": 0, "count_mismatches": 0},
        "input_tokens": {"mismatched_requests": 0},
        "concurrency": {"target": 4, "mean_in_flight": 3.99},
        "rate": {"target": None, "achieved": None},
        "warnings": [],
    }
    for k, v in over.items():
        s[k] = {**s[k], **v} if isinstance(v, dict) and isinstance(s.get(k), dict) else v
    return s


def test_clean_run_has_no_warnings():
    assert warnings(summary()) == []


def test_each_condition_warns():
    cases = {
        "failed": summary(failed=3, error_rate=0.03, errors={"HTTP 500: boom": 3}),
        "output shortfall": summary(output_tokens={"shortfall_requests": 7, "achieved_mean": 90.0}),
        "differ from streamed": summary(output_tokens={"count_mismatches": 2}),
        "client-counted for 4 request(s)": summary(output_tokens={"client_counted": 4}),
        "prompt tokens differ": summary(input_tokens={"mismatched_requests": 5}),
        "not held": summary(concurrency={"target": 4, "mean_in_flight": 3.5}),
        "target rate 10/s not reached": summary(rate={"target": 10.0, "achieved": 8.0}),
        "run interrupted": summary(status="interrupted"),
        "client floor": summary(warnings=["client floor: beyond it"]),
        "30 request(s) never released": summary(not_released=30),
    }
    for needle, s in cases.items():
        ws = warnings(s)
        assert len(ws) == 1 and needle in ws[0], (needle, ws)


def test_rate_within_5_percent_and_tiny_runs_do_not_warn():
    assert warnings(summary(rate={"target": 10.0, "achieved": 9.6})) == []
    assert warnings(summary(completed=5, rate={"target": 10.0, "achieved": 1.0}, concurrency={"target": 4, "mean_in_flight": 1.0})) == []


def test_the_rate_is_judged_against_what_the_schedule_offered():
    # a 30-request Poisson draw offered 8.25/s of a 10/s target, and the client sent it as drawn
    assert warnings(summary(rate={"target": 10.0, "offered": 8.25, "achieved": 8.25})) == []
    (w,) = warnings(summary(rate={"target": 10.0, "offered": 9.9, "achieved": 8.0}))
    assert "achieved 8.00/s (the schedule offered 9.90/s)" in w


def test_the_report_says_when_its_figures_are_over_a_steady_state_window():
    from servebench.outputs.traffic import lines

    ss = {"applied": True, "rule": "concurrency reached 4", "start_offset_ns": 250_000_000,
          "end_offset_ns": 996_000_000, "requests_kept": 37, "requests_left_out": 3}
    (line,) = [x for x in lines({"steady_state": ss}) if "steady" in x]
    assert "37 of 40 requests kept (concurrency reached 4)" in line and "0.25 s to 0.996 s" in line
    (line,) = lines({"steady_state": {"applied": False, "rule": "never reached 4 in flight"}})
    assert "not applied (never reached 4 in flight)" in line
    assert not [x for x in lines({}) if "steady" in x]
