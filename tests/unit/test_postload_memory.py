"""Issue 20: the post-load path keeps fewer per-token Python objects and smaller temporaries,
with the same numbers."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from servebench.analysis import intervals, itl
from servebench.analysis.per_request import MS, itl_gaps_ns
from servebench.records import RequestRecord, counts_array, ns_array
from servebench.store import runfiles


def _records(n: int, seed: int = 1) -> list[RequestRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = 10**15 + rng.randrange(10**12)
        m = rng.choice([0, 1, 2, 7, 40])
        ts, cs = [], []
        for _ in range(m):
            t += rng.randrange(0, 3_000_001)  # 0: several events in one read
            ts.append(t)
            cs.append(rng.choice([1, 1, 1, 0, 2, 3]))  # batched and zero-token events alike
        out.append(RequestRecord(index=i, sent_ns=10**15, end_ns=t + 1, status=200, token_ns=ts,
                                 token_counts=cs, server_output_tokens=sum(cs), finish_reason="length",
                                 error=None if i % 5 else "x", decoded=True))
    return out


def test_itl_blocks_are_the_python_list_exactly():
    recs = _records(300)
    want = [g / MS for r in recs for g in itl_gaps_ns(r)]
    got = np.concatenate(list(itl.blocks(recs, block=64)))
    assert got.dtype == np.float64
    assert got.tolist() == want  # bit for bit: summary.json must not move
    for r in recs:  # as decode and load_records hold them (records.py)
        r.token_ns, r.token_counts = ns_array(r.token_ns), counts_array(r.token_counts)
    assert np.concatenate(list(itl.blocks(recs))).tolist() == want == [g / MS for r in recs for g in itl_gaps_ns(r)]
    assert list(itl.blocks([])) == [] and list(itl.blocks(_records(3)[:0])) == []


def test_records_written_in_slices_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "_SLICE_TOKENS", 16)  # many slices, some of one record
    recs = _records(200)
    path = tmp_path / "requests.parquet"
    runfiles.write_records(path, recs)
    assert pq.ParquetFile(path).num_row_groups > 5
    back = runfiles.load_records(path)
    assert [(r.index, list(r.token_ns), list(r.token_counts), r.error) for r in back] == \
        [(r.index, r.token_ns, r.token_counts, r.error) for r in recs]
    assert not path.with_suffix(".parquet.tmp").exists()


def test_no_records_still_writes_the_schema(tmp_path):
    path = tmp_path / "requests.parquet"
    runfiles.write_records(path, [])
    assert runfiles.load_records(path) == []
    assert "token_ns" in pq.read_schema(path).names


def _bootstrap_whole_chunks(values, stat, resamples: int, chunk: int) -> tuple[float, float]:
    """bootstrap_ci as it was: each chunk's resamples gathered and reduced at once."""
    a = np.asarray(values, dtype=np.float64)
    n = a.size
    rng = np.random.default_rng(0)
    per = max(1, chunk // n)
    draws = np.concatenate([np.asarray(stat(a[rng.integers(0, n, size=(min(per, resamples - s), n))]), dtype=np.float64)
                            for s in range(0, resamples, per)])
    tail = (1 - 0.95) / 2 * 100  # not 2.5 exactly, as bootstrap_ci computes it
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 333, 2000])
def test_bootstrap_in_row_blocks_is_the_whole_chunk_interval(monkeypatch, n):
    # small chunks and blocks: many of each, with odd remainders, on a fast input
    monkeypatch.setattr(intervals, "_CHUNK", 5_000)
    monkeypatch.setattr(intervals, "_ROWS", 640)
    rng = np.random.default_rng(n)
    x = rng.exponential(5.0, n) * 1e3
    c = rng.integers(1, 65, n).astype(np.float64)
    ratio = lambda m: x[m.astype(np.int64)].sum(axis=1) / c[m.astype(np.int64)].sum(axis=1)  # noqa: E731 - run_intervals' ITL mean
    for values, stat in ((x, None), (np.arange(n, dtype=np.float64), ratio)):
        iv = intervals.bootstrap_ci(values, stat, resamples=300)
        assert (iv.low, iv.high) == _bootstrap_whole_chunks(values, stat or (lambda m: m.mean(axis=1)), 300, 5_000)
