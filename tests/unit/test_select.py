"""analysis/select.py: exact order statistics and numpy's percentiles of a sample read in
batches, never all in memory (issue 20: a long run's ITL and read lags)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servebench.analysis import select


def _batches(a: np.ndarray, cuts: int):
    parts = np.array_split(a, cuts)
    return lambda: iter(parts)


SAMPLES = {
    "normal": lambda rng, n: rng.normal(5.0, 1.0, n),
    "ties": lambda rng, n: rng.integers(0, 4, n) / 3.0,
    "one value": lambda rng, n: np.full(n, 5.000001),
    "negatives and zeros": lambda rng, n: np.round(rng.exponential(2.0, n), 1) - 1.0,
    "wide range": lambda rng, n: rng.choice([0.0, 1e-300, 3.0, 1e300, -7.5, np.inf], n),
    "ms gaps": lambda rng, n: rng.integers(4_990_000, 5_010_000, n) / 1e6,
}


@pytest.mark.parametrize("kind", SAMPLES)
@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 5003])
def test_every_rank_is_the_sorted_value(kind, n):
    rng = np.random.default_rng(n)
    a = SAMPLES[kind](rng, n)
    ranks = range(n) if n <= 1000 else [0, 1, n // 2, n - 2, n - 1, *rng.integers(0, n, 20)]
    # a small cap: most ranks are found by refining the key bits over several passes
    got = select.order_statistics(_batches(a, 7), n, ranks, cap=8)
    s = np.sort(a)
    assert all(got[r] == s[r] for r in ranks)


@pytest.mark.parametrize("kind", SAMPLES)
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 4000])
def test_percentiles_are_numpys_bit_for_bit(kind, n):
    pcts = (0.1, 1, 25, 50, 90, 95, 99, 99.9, 100)
    rng = np.random.default_rng(n + 7)
    for _ in range(5):
        a = SAMPLES[kind](rng, n)
        lo, hi, _ = select.percentile_ranks(n, pcts)
        at = select.order_statistics(_batches(a, 3), n, [*lo, *hi], cap=16)
        got = select.percentiles(n, pcts, at.__getitem__)
        want = np.percentile(a, pcts)
        assert [str(x) for x in got] == [str(float(y)) for y in want]  # str: nan == nan, -0.0 != 0.0


def test_no_pass_holds_more_than_cap_values(monkeypatch):
    held = []
    real = np.sort
    monkeypatch.setattr(select.np, "sort", lambda v, *a, **k: held.append(v.size) or real(v, *a, **k))
    a = np.random.default_rng(3).integers(0, 5000, 200_000) / 7.0  # each value tied with ~40 others
    n = a.size
    ranks = [0, n // 3, n // 2, n - 1]
    got = select.order_statistics(_batches(a, 10), n, ranks, cap=1000)
    s = real(a)
    assert all(got[r] == s[r] for r in ranks)
    assert held and max(held) <= 1000


def test_moments_are_numpys_to_the_last_bits_and_do_not_depend_on_the_cut():
    a = np.random.default_rng(5).exponential(5.0, 100_003)
    m1, s1 = select.moments(_batches(a, 1), a.size)
    m2, s2 = select.moments(_batches(a[::-1].copy(), 13), a.size)
    assert (m1, s1) == (m2, s2)  # exactly rounded sums: the order and the cuts do not matter
    assert m1 == pytest.approx(float(a.mean()), rel=1e-12) and s1 == pytest.approx(float(a.std()), rel=1e-12)
    assert math.fsum(a.tolist()) / a.size == m1


def test_ranks_outside_the_sample_are_refused():
    with pytest.raises(ValueError):
        select.order_statistics(_batches(np.ones(3), 1), 3, [3])


def test_batches_that_do_not_hold_n_values_are_refused():
    a = np.arange(10.0)
    with pytest.raises(ValueError, match="9 values"):
        select.order_statistics(_batches(a[:9], 2), 10, [0, 9])
    with pytest.raises(ValueError, match="11 values"):
        select.order_statistics(_batches(np.arange(11.0), 2), 10, [0, 9], cap=4)  # refined, not collected
