"""Issue 20: ITL's figures, found without every gap in memory (analysis/select.py), stay the
numbers the old formulas gave (metrics.dist on the gaps in record order, quantile_ci on a sorted
copy): exactly, except mean and std, now exactly rounded sums (within 1e-12 of numpy's)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from servebench.analysis import itl
from servebench.analysis.intervals import quantile_ci
from servebench.analysis.metrics import dist, summarize
from servebench.analysis.per_request import MS, PERCENTILES, itl_gaps_ns
from servebench.analysis.run_intervals import figure
from servebench.records import RequestRecord, counts_array, ns_array


def _rec(i: int, ts: list[int], cs: list[int]) -> RequestRecord:
    t0 = ts[0] - 1000 if ts else 10**15
    return RequestRecord(index=i, input_tokens=8, output_tokens=max(1, len(ts)), scheduled_ns=t0, slot_ns=t0,
                         sent_ns=t0, end_ns=(ts[-1] if ts else t0) + 1, status=200,
                         token_ns=ns_array(ts), token_counts=counts_array(cs), server_output_tokens=sum(cs))


def _random(n: int, seed: int, gap_ns: tuple[int, ...] = ()) -> list[RequestRecord]:
    """Varied records: no token, one token, zero-token and batched events, equal stamps;
    with gap_ns, every gap one of those values (many ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = 10**15 + rng.randrange(10**12)
        ts, cs = [], []
        for _ in range(rng.choice([0, 1, 2, 5, 40, 64])):
            t += rng.choice(gap_ns) if gap_ns else rng.randrange(0, 9_000_001)
            ts.append(t)
            cs.append(rng.choice([1, 1, 1, 1, 0, 2, 3]))
        out.append(_rec(i, ts, cs))
    return out


def _old(records: list[RequestRecord], level: float = 0.95) -> tuple[dict, dict]:
    """What summary.json held before: the gaps as a list in record order, each figure on it."""
    gaps = [g / MS for r in records for g in itl_gaps_ns(r)]
    return dist(gaps), {p: quantile_ci(gaps, p, level) for p in PERCENTILES}


def _same_dist(got: dict, want: dict) -> None:
    """Every order statistic exact; mean and std to 1e-12 (fsum against numpy's pairwise sum)."""
    assert {k: v for k, v in got.items() if k not in ("mean", "std")} == {
        k: v for k, v in want.items() if k not in ("mean", "std")}
    for k in ("mean", "std"):
        assert (got[k] is None) == (want[k] is None)
        if want[k] is not None:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15)


CASES = {
    "empty": [],
    "one token each": [_rec(i, [10**15 + i], [1]) for i in range(5)],
    "one gap": [_rec(0, [10**15, 10**15 + 4_999_999], [1, 1])],
    "tied gaps": _random(200, 2, gap_ns=(5_000_000,)),
    "few values, many ties": _random(300, 3, gap_ns=(0, 1, 3_000_000, 3_000_001, 7_000_000)),
    "varied": _random(300, 4),
    "over 3000 gaps (normal ranks)": _random(400, 5, gap_ns=(4_000_000, 5_000_000, 6_000_000, 5_000_000)),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_every_itl_figure_is_the_old_formulas_value(name, level):
    recs = CASES[name]
    want_dist, want_iv = _old(recs, level)
    got = itl.figures(recs, level)
    assert list(got.dist) == list(want_dist)  # key order: JSON bytes
    _same_dist(got.dist, want_dist)
    assert got.intervals == want_iv
    assert got.level == level


@pytest.mark.parametrize("name", ["tied gaps", "varied", "over 3000 gaps (normal ranks)"])
def test_summary_json_itl_blocks_are_the_old_formulas_values(name):
    recs = CASES[name]
    want_dist, want_iv = _old(recs)
    s = summarize(recs, target_concurrency=4)
    _same_dist(s["itl_ms"], want_dist)
    for p in PERCENTILES:
        assert s["intervals"]["figures"][f"itl_ms.p{p}"] == figure(want_iv[p])


def test_no_gap_array_is_built_for_a_summary(monkeypatch):
    # the gaps are recomputed block by block (itl.blocks) as often as selection needs them,
    # never as one array of every gap (8 B a gap at the post-load peak)
    monkeypatch.setattr(itl, "BLOCK", 64)
    real, sizes = itl.blocks, []

    def spy(*a, **k):
        for b in real(*a, **k):
            sizes.append(b.size)
            yield b

    monkeypatch.setattr(itl, "blocks", spy)
    recs = CASES["varied"]
    want_dist, want_iv = _old(recs)
    s = summarize(recs, target_concurrency=4)
    n = s["itl_ms"]["n"]
    assert sizes and max(sizes) < n and sum(sizes) % n == 0  # several passes, each in blocks
    _same_dist(s["itl_ms"], want_dist)
    assert s["intervals"]["figures"]["itl_ms.p99"] == figure(want_iv[99])


def test_presorted_quantile_ci_reads_the_array_as_given():
    v = np.sort(np.random.default_rng(0).exponential(5.0, 5000))
    for p in (1, 50, 99):
        assert quantile_ci(v, p, presorted=True) == quantile_ci(v[::-1].copy(), p)
