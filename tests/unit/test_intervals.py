"""The interval methods cover what they claim, and say when they cannot."""

import math

import numpy as np
import pytest

from servebench.analysis.intervals import (Interval, bootstrap_ci, overlap, quantile_ci,
                                           repeats_ci)


@pytest.mark.parametrize("n,pct", [(1000, 99), (50, 50), (5000, 90)])
def test_order_statistic_interval_covers_the_true_percentile(n, pct):
    rng = np.random.default_rng(7)
    true = -np.log(1 - pct / 100)  # exponential(1) quantile
    hits = 0
    for _ in range(300):
        iv = quantile_ci(rng.exponential(size=n), pct)
        hits += iv.low <= true <= iv.high
    assert 0.92 <= hits / 300 <= 1.0


def test_p99_of_240_requests_is_open_above():
    # the sweep-limit case: 240 samples cannot bound a p99 from above at 95 %
    iv = quantile_ci(np.arange(240.0), 99)
    assert iv.high is None and iv.low is not None and iv.method == "order-statistic"


def test_percentile_bounds_are_sample_values_around_the_estimate():
    x = np.random.default_rng(3).normal(size=2000)
    iv = quantile_ci(x, 50)
    assert iv.low in x and iv.high in x and iv.low < np.median(x) < iv.high


def test_bootstrap_mean_is_deterministic_and_covers():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(100):
        iv = bootstrap_ci(rng.exponential(size=400), resamples=400)
        hits += iv.low <= 1.0 <= iv.high
    assert hits >= 88
    x = rng.exponential(size=300)
    assert bootstrap_ci(x) == bootstrap_ci(x)


def test_repeats_use_student_t():
    iv = repeats_ci([100.0, 102.0])
    # mean 101, s = 1.414, t(1) = 12.706: half-width 12.706 * 1.414 / 1.414
    assert iv.low == pytest.approx(101 - 12.706) and iv.high == pytest.approx(101 + 12.706)
    assert repeats_ci([5.0]).low is None
    # rates: two repeats far apart would reach below 0 (t = 12.7 at n = 2); a mean of rates cannot
    wide = repeats_ci([10.0, 300.0])
    assert wide.low == 0.0 and wide.high > 300.0
    assert repeats_ci([-10.0, 300.0]).low < 0  # a difference may well be negative


def test_empty_samples_give_no_interval():
    assert quantile_ci([], 99).low is None and bootstrap_ci([]).high is None
    with pytest.raises(ValueError):
        quantile_ci([1.0, 2.0], 100)


def test_overlap_is_a_tie_and_open_ends_reach_far():
    a = Interval(1.0, 2.0, "bootstrap", 10)
    assert overlap(a, Interval(1.9, 3.0, "bootstrap", 10))
    assert not overlap(a, Interval(2.1, 3.0, "bootstrap", 10))
    assert overlap(Interval(0.0, None, "order-statistic", 10), Interval(50.0, 60.0, "bootstrap", 3))


def test_repeats_past_the_t_table_still_use_student_t():
    # 32 values (df 31): t = 2.0395, not the normal 1.96 (that interval is ~4 % too narrow)
    vals = [float(i % 2) for i in range(32)]
    iv = repeats_ci(vals)
    sd = float(np.std(vals, ddof=1))
    assert (iv.high - iv.low) / 2 == pytest.approx(2.0395 * sd / math.sqrt(32), rel=1e-3)
