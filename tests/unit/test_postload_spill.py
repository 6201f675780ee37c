"""After the load, a spooled run's decoded token arrays go to disk record by record
(store/tokens.py) and the records keep a few scalars each (records.TokenStats): the post-load
peak no longer grows with the tokens streamed (issue 20). Nothing written changes:
requests.parquet is the same bytes and summary.json the same figures as from records fully
decoded in memory."""

from __future__ import annotations

import copy
import errno
import json
import time
import tracemalloc

import pytest

from servebench.adapters import ADAPTERS
from servebench.analysis.decode import decode_records
from servebench.analysis.metrics import summarize
from servebench.emulator.handle import start_emulator
from servebench.load import spooled
from servebench.records import SPILLED, RequestRecord, token_arrays
from servebench.store import runfiles, spool, tokens
from tests.unit.test_faults_cli import COMMON, only_run_dir, sb
from tests.unit.test_spool import reference_records


def _spooled(tmp_path, records: list[RequestRecord], key: str, first: int) -> list:
    """records[:first] through a spool, as a load leaves them; returns the spool paths."""
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=0.01)
    for r in records[:first]:
        sp.add(r)
    deadline = time.monotonic() + 60
    while sp.written < first and time.monotonic() < deadline:
        time.sleep(0.01)
    sp.close()
    assert sp.written == first and sp.error is None
    return [sp.path]


@pytest.mark.parametrize("name", ["vllm_completions", "tgi", "sglang", "vllm_truncated", "vllm_400"])
def test_spilled_records_write_the_same_bytes_and_figures(tmp_path, name):
    key, records = reference_records(name, 60)
    kept = copy.deepcopy(records)
    decode_records(ADAPTERS[key], kept)
    paths = _spooled(tmp_path, records, key, 45)  # the last 15 decoded from memory, as in flight at the end
    spooled.decode_all(ADAPTERS[key], records, paths, tmp_path)
    assert all(r.token_ns is SPILLED and r.token_counts is SPILLED and r.tok is not None for r in records)
    assert json.dumps(summarize(records, target_concurrency=4)) == json.dumps(summarize(kept, target_concurrency=4))
    runfiles.write_records(tmp_path / "a.parquet", records)
    runfiles.write_records(tmp_path / "b.parquet", kept)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_decoded_arrays_are_not_kept_once_spilled(tmp_path):
    """The spooled records' stamps and counts (12 B a token as arrays) do not stay in memory:
    what decoding leaves allocated grows by a few scalars a request, not by the tokens."""
    key, records = reference_records("vllm_completions", 1)
    template = records[0]
    many = []
    for i in range(80):  # 80 requests of ~2,000 events each: 160,000 tokens (arrays kept: 1.9 MB)
        r = copy.deepcopy(template)
        r.index = i
        body = b"".join(c for _, c in r.chunks)
        one = body.split(b"\n\n")
        events = [e + b"\n\n" for e in one if e.startswith(b"data: {") and b'"text":"' in e][:1] * 2000
        tail = [e + b"\n\n" for e in one if e and not (e.startswith(b"data: {") and b'"text":"' in e)]
        r.chunks = [(r.sent_ns + 1000 * (k + 1), e) for k, e in enumerate(events + tail)]
        many.append(r)
    paths = _spooled(tmp_path, many, key, len(many))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        spooled.decode_all(ADAPTERS[key], many, paths, tmp_path)
        kept_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    streamed = sum(r.tok.streamed for r in many)
    assert streamed >= 150_000 and all(r.ok for r in many)
    assert all(len(r.token_ns) == 0 for r in many)
    assert kept_bytes / streamed < 1.0  # arrays kept: >= 12 B a token
    ns, counts = token_arrays(many[7])  # read back from disk
    assert len(ns) == many[7].tok.events and sum(counts) == many[7].tok.streamed


def test_a_full_disk_while_spilling_keeps_the_rest_in_memory(tmp_path, monkeypatch):
    key, records = reference_records("sglang", 40)
    kept = copy.deepcopy(records)
    decode_records(ADAPTERS[key], kept)
    paths = _spooled(tmp_path, records, key, 40)
    real, calls = tokens.TokenFile.put, []

    def put(self, ns, counts):
        calls.append(1)
        if len(calls) > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, ns, counts)

    monkeypatch.setattr(tokens.TokenFile, "put", put)
    spooled.decode_all(ADAPTERS[key], records, paths, tmp_path)
    assert sum(r.tok is not None for r in records) == 10 and len(calls) == 11  # no more tries after the first refusal
    assert json.dumps(summarize(records)) == json.dumps(summarize(kept))
    runfiles.write_records(tmp_path / "a.parquet", records)
    runfiles.write_records(tmp_path / "b.parquet", kept)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_a_spooled_runs_summary_is_what_its_decoded_records_give(tmp_path, monkeypatch):
    """A real spooled run (emulator, 127.0.0.1): the writer's figures, from spilled records,
    are those summarize() gives on its requests.parquet read back whole."""
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")
    with start_emulator("openai", ttft_ms=5, itl_ms=2) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "40", "--concurrency", "4", "--output-tokens",
               "12", "--warmup", "2", "--results-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    run_dir = only_run_dir(tmp_path)
    assert list(run_dir.glob("requests.spool*")) == []  # the spool and its read-lag stamps, once read
    assert [f.name for f in run_dir.iterdir() if "tok" in f.name] == []
    stored = json.loads((run_dir / "summary.json").read_text())
    records = runfiles.load_records(run_dir / "requests.parquet")
    assert sum(len(r.token_ns) for r in records if not r.warmup) == 40 * 12
    conc = json.loads((run_dir / "run.json").read_text())["config"]["load"]["concurrency"]
    again = json.loads(json.dumps(summarize(records, target_concurrency=conc)))
    assert stored["read_lag_ms"]["n"] > 0
    for key in ("completed", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token", "output_tokens",
                "input_tokens", "intervals"):
        assert again[key] == stored[key], key


def test_read_lags_left_on_disk_are_read_a_block_at_a_time(tmp_path, monkeypatch):
    from array import array

    import numpy as np

    from servebench.analysis import select
    from servebench.analysis.metrics import dist
    from servebench.load.loop import LoadStats

    monkeypatch.setattr(spooled, "LAG_BLOCK", 1000)
    sp = spool.Spool(tmp_path / spool.NAME, "openai-completions", interval_s=0.01)
    rng = np.random.default_rng(0)
    parts = [array("q", rng.integers(-50_000, 9_000_000, 5000).tolist()) for _ in range(5)]
    for a in parts:
        sp.add_lags(a)
    stats = LoadStats(read_lag_ns=array("q", [-1, 7]))  # what stayed in the transport at the end
    whole = [*parts[0], *parts[1], *parts[2], *parts[3], *parts[4], -1, 7]
    spooled.stop(sp, stats, keep_lags=True)
    assert sp.lag_path.stat().st_size == 25000 * 8 and list(stats.read_lag_ns) == [-1, 7]  # not read back
    n, batches = spooled.lag_blocks([sp.path], stats.read_lag_ns)
    assert n == len(whole) and max(len(b) for b in batches()) == 1000
    got, want = select.dist(batches, n)[0], dist(np.asarray(whole, dtype=np.float64) / 1e6)
    assert {k: v for k, v in got.items() if k not in ("mean", "std")} == {
        k: v for k, v in want.items() if k not in ("mean", "std")}
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12) and got["std"] == pytest.approx(want["std"], rel=1e-12)
    spooled.remove_lags([sp.path])
    assert not sp.lag_path.exists()


# 4k: nothing fits (rescue dir); 40k: the spool fails early, requests.parquet fits; 100k: the
# spool fails midway (records spooled and spilled beside records kept in memory); 300k: all fits
@pytest.mark.parametrize("size", ["4k", "40k", "100k", "300k"])
def test_a_spooled_run_on_a_full_disk_keeps_every_record_and_its_figures(tmp_path, size):
    """Spool, token file and requests.parquet share the run dir's disk: whichever the full disk
    refuses, every record ends up in a requests.parquet (run dir or rescue dir) and the summary
    written beside it has the figures those records give."""
    import os
    import sys

    from tests.unit.test_faults_cli import _with_tmpfs

    rescue = tmp_path / "rescue"
    env = {**os.environ, "SERVEBENCH_RESCUE_DIR": str(rescue), "SERVEBENCH_SPOOL_MIN_TOKENS": "0"}
    with start_emulator("openai", ttft_ms=5, itl_ms=1) as emu:
        p = _with_tmpfs(size, tmp_path / "mnt", tmp_path / "after", [
            sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, *COMMON, "--requests", "40",
            "--concurrency", "4", "--output-tokens", "30", "--results-dir", str(tmp_path / "mnt")], env)
    assert p.returncode != 99, "tmpfs mount failed: " + p.stderr
    assert p.returncode in (0, 3), p.stderr
    assert "Traceback" not in p.stderr
    kept = [d for d in (tmp_path / "after", rescue) if d.exists() for d in d.iterdir()
            if (d / "requests.parquet").exists()]
    assert len(kept) == 1, (p.returncode, p.stderr)
    records = runfiles.load_records(kept[0] / "requests.parquet")
    assert len(records) == 40 and all(r.ok and len(r.token_ns) == 30 for r in records)
    summaries = [d / "summary.json" for d in (*(tmp_path / "after").iterdir(), *kept) if (d / "summary.json").exists()]
    assert summaries, p.stderr
    again = json.loads(json.dumps(summarize(records, target_concurrency=4)))
    for f in summaries:
        stored = json.loads(f.read_text())
        assert stored["completed"] == 40 and stored["itl_ms"] == again["itl_ms"] and stored["ttft_ms"] == again["ttft_ms"]
