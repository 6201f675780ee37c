"""Window arithmetic: interpolated counters, bracketed deltas, means, energy per token."""

from __future__ import annotations

import pytest

from servebench.telemetry.summary import bracket_delta, finalize, interp_at, interp_delta, mean_in, peak_in

T = [0, 100, 200, 300]
E = [1000.0, 2000.0, 2500.0, 4500.0]


def test_interp_at_between_and_on_samples():
    assert interp_at(T, E, 150) == 2250.0  # halfway between 2000 and 2500
    assert interp_at(T, E, 200) == 2500.0
    assert interp_at(T, E, 0) == 1000.0 and interp_at(T, E, 300) == 4500.0
    assert interp_at(T, E, -1) is None and interp_at(T, E, 301) is None  # never extrapolate
    assert interp_at(T, [1000.0, None, 3000.0, None], 100) == 2000.0  # gaps skipped


def test_interp_delta_is_counter_difference_not_power_integral():
    # Marks between samples: (50 -> 1500) to (250 -> 3500).
    assert interp_delta(T, E, (50, 250)) == 2000.0
    assert interp_delta(T, E, (50, 350)) is None


def test_bracket_delta_takes_reads_outside_the_window():
    sent = [0, 90, 190, 290, 390]
    recv = [10, 100, 200, 300, 400]
    vals = [5, 7, None, 20, 30]
    d = bracket_delta(sent, recv, vals, (150, 250))
    # before: last read finished <= 150 (index 1, value 7); after: first read started >= 250
    assert d == {"delta": 13.0, "slack_before_s": 60e-9, "slack_after_s": 50e-9}
    # A read that straddles the start can't be used as 'before'.
    assert bracket_delta(sent, recv, vals, (95, 250))["delta"] == 15.0
    assert bracket_delta(sent, recv, vals, (5, 250)) is None  # nothing finished before


def test_bracket_delta_counts_across_a_server_restart_as_promql_increase_does():
    # 1000 -> 1200, then the server restarts (its counters start from 0) and counts 50, 150
    sent = [0, 100, 200, 300, 400]
    recv = [s + 1 for s in sent]
    d = bracket_delta(sent, recv, [1000, 1100, 1200, 50, 150], (50, 350))
    assert d["delta"] == 350.0 and d["resets"] == 1  # 100 + 100 + 50 + 100, not 150 - 1000


def test_means_and_peaks_use_only_samples_inside_the_window():
    t, v = [0, 10, 20, 30], [100, 1, 3, 100]
    assert mean_in(t, v, (5, 25)) == 2.0 and peak_in(t, v, (5, 25)) == 3.0
    assert mean_in(t, v, None) == 51.0
    assert mean_in(t, v, (11, 19)) is None  # no sample in a window shorter than the interval


def test_finalize_energy_per_output_token():
    gpu = {"available": True, "gpus": [{"energy_j": 30.0}, {"energy_j": 10.0}], "total": {"energy_j": 40.0}}
    out = finalize({"gpu": gpu, "process": {"available": False}}, 200)
    assert out["gpu"]["total"]["joules_per_output_token"] == 0.2
    assert [g["joules_per_output_token"] for g in out["gpu"]["gpus"]] == [0.15, 0.05]
    assert out["gpu"]["output_tokens"] == 200 and out["process"] == {"available": False}
    assert "joules_per_output_token" not in gpu["total"]  # input left alone
    assert finalize({"available": False, "reason": "x"}, 10) == {"available": False, "reason": "x"}
    assert "joules_per_output_token" not in finalize(gpu, 0)["total"]


@pytest.mark.parametrize("n", [1, 7])
def test_finalize_accepts_gpu_summary_alone(n):
    gpu = {"available": True, "gpus": [], "total": {"energy_j": 7.0}}
    assert finalize(gpu, n)["total"]["joules_per_output_token"] == pytest.approx(7.0 / n)
