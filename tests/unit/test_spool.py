"""Finished records go to disk during the run (store/spool.py), so memory stays flat over any
run length; a killed run keeps what was spooled before the kill; metrics from spooled records
are the same bytes as from records held in memory."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servebench.adapters import ADAPTERS
from servebench.analysis.decode import decode_records
from servebench.analysis.metrics import summarize
from servebench.emulator.handle import start_emulator
from servebench.load import spooled
from servebench.outputs import rebuild
from servebench.records import RequestRecord
from servebench.store import runfiles, spool

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"


def reference_records(name: str, n: int = 40) -> tuple[str, list[RequestRecord]]:
    """n requests replaying a byte-exact engine stream (tests/fixtures/streams), each read
    stamped at its own times, so every request's metrics differ."""
    meta = json.loads((STREAMS / f"{name}.json").read_text())
    body = (STREAMS / f"{name}.sse").read_bytes()
    edges = [0, *meta["splits"], len(body)]
    reads = [body[a:b] for a, b in zip(edges, edges[1:])]
    out = []
    for i in range(n):
        sent = 1_000_000_000 + i * 7_000_000
        stamps = [sent + 20_000_000 + k * (1_000_000 + 37_000 * i) for k in range(len(reads))]
        out.append(RequestRecord(index=i, input_tokens=16, output_tokens=8, scheduled_ns=sent, slot_ns=sent,
                                 sent_ns=sent, first_byte_ns=stamps[0] - 10, end_ns=stamps[-1] + 5,
                                 status=meta["status"], chunks=list(zip(stamps, reads))))
    return meta["adapter"], out


@pytest.mark.parametrize("name", ["vllm_completions", "vllm_chat", "tgi", "lightllm", "sglang", "vllm_truncated",
                                  "vllm_400"])
def test_metrics_from_spooled_records_are_byte_identical(tmp_path, name):
    key, records = reference_records(name)
    kept = copy.deepcopy(records)
    decode_records(ADAPTERS[key], kept)
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=0.01)
    for r in records[:30]:  # the last ten stay in memory, as requests in flight at the end would
        sp.add(r)
    deadline = time.monotonic() + 60
    while sp.written < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(r.chunks == [] for r in records[:30])  # flushed by the thread: the bytes left memory
    sp.close()
    assert sp.written == 30 and sp.error is None
    spooled.decode_all(ADAPTERS[key], records, [sp.path])
    assert json.dumps(summarize(records)) == json.dumps(summarize(kept))
    runfiles.write_records(tmp_path / "a.parquet", records)
    runfiles.write_records(tmp_path / "b.parquet", kept)
    assert runfiles.load_records(tmp_path / "a.parquet") == runfiles.load_records(tmp_path / "b.parquet")


def test_a_torn_last_batch_is_dropped_and_the_whole_ones_read(tmp_path):
    key, records = reference_records("vllm_completions", 12)
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=3600)  # flushed by hand below
    for part in (records[:4], records[4:8], records[8:]):
        for r in part:
            sp.add(r)
        sp.flush()
    sp.close()
    data = sp.path.read_bytes()
    sp.path.write_bytes(data[: len(data) - 200])  # a kill in the middle of the third batch
    _, rows = spool.records(sp.path)
    assert [r.index for r in rows] == list(range(8))


def test_a_spool_that_cannot_write_keeps_the_records_in_memory(tmp_path):
    key, records = reference_records("vllm_completions", 4)
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=3600)
    sp._writer.close()  # as a disk that failed under it: every later write raises
    for r in records:
        sp.add(r)
    sp.flush()
    sp.close()
    assert sp.error and sp.written == 0
    assert all(r.chunks for r in records)  # nothing lost: the writer decodes them from memory


def sb(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_run_spools_during_the_load_and_removes_the_spool_after(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")  # a small run spools too
    with start_emulator("openai", ttft_ms=5, itl_ms=2) as emu:
        p = sb("run", "--endpoint", emu.url, "--model", "tiny", "--requests", "60", "--input-tokens", "16",
               "--output-tokens", "8", "--concurrency", "4", "--results-dir", str(tmp_path), "--no-telemetry",
               "--no-plots")
    assert p.returncode == 0, p.stderr
    run_dir = next(tmp_path.iterdir())
    assert not spooled.found(run_dir)  # the crash copy is gone once requests.parquet holds the rows
    recs = [r for r in runfiles.load_records(run_dir / "requests.parquet") if not r.warmup]
    assert len(recs) == 60 and all(r.ok and len(r.token_ns) == 8 for r in recs)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_killed_run_keeps_what_was_spooled_and_report_reads_it(tmp_path, monkeypatch, workers):
    """SIGKILL mid-run (the parent and its load workers): no summary, no requests.parquet, but
    every request finished more than a flush interval before the kill is on disk; `report`
    makes the run dir whole from it."""
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")  # a small run spools too
    with start_emulator("openai", ttft_ms=5, itl_ms=20) as emu:
        proc = subprocess.Popen([sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, "--model",
                                 "tiny", "--requests", "400", "--input-tokens", "16", "--output-tokens", "10",
                                 "--concurrency", "4", "--workers", workers, "--results-dir", str(tmp_path),
                                 "--no-telemetry", "--no-plots"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        found = _kill_once_spooled(proc, tmp_path, spooled.PATTERN, int(workers), settle_s=1.5)
    run_dir = found[0].parent
    assert not (run_dir / "summary.json").exists() and not (run_dir / "requests.parquet").exists()
    n = sum(len(list(spool.records(p)[1])) for p in found)
    assert 0 < n < 400
    notes, problems = rebuild.prepare(run_dir)
    assert problems == [] and "spooled" in notes[0]
    summary = runfiles.load_summary(run_dir)
    assert summary["completed"] == n and summary["failed"] == 0
    assert len(runfiles.load_records(run_dir / "requests.parquet")) == n
    p = sb("report", str(run_dir))
    assert p.returncode == 0, p.stderr


def test_read_lag_stamps_spilled_during_the_load_all_come_back(tmp_path):
    from array import array

    from servebench.load.loop import LoadStats

    _, records = reference_records("vllm_completions", 2)
    sp = spool.Spool(tmp_path / spool.NAME, "openai-completions", interval_s=0.01)
    for k in range(5):
        sp.add_lags(array("q", range(k * 5000, (k + 1) * 5000)))
    stats = LoadStats(read_lag_ns=array("q", [-1, -2]))  # what stayed in the transport at the end
    spooled.stop(sp, stats)
    assert sorted(stats.read_lag_ns) == [-2, -1, *range(25000)]
    assert not sp.lag_path.exists()


def test_a_run_dir_that_refuses_the_spool_is_left_without_one(tmp_path):
    run_dir = tmp_path / "ro"
    run_dir.mkdir()
    (run_dir / spool.NAME).mkdir()  # the name taken by a directory: opening the spool fails
    ok = spooled.start(run_dir / "requests.spool.w0.arrow", "openai-completions")
    assert ok is not None
    ok.close()
    assert spooled.start(run_dir / spool.NAME, "openai-completions") is None
    assert (run_dir / spool.NAME).is_dir() and not (run_dir / "requests.spool.lags").exists()


def test_only_runs_expected_to_stream_many_tokens_spool(monkeypatch):
    monkeypatch.delenv("SERVEBENCH_SPOOL_MIN_TOKENS", raising=False)
    assert not spooled.wanted(128_000) and spooled.wanted(spooled.MIN_TOKENS)
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")
    assert spooled.wanted(0)


def test_a_small_run_keeps_its_records_in_memory(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVEBENCH_SPOOL_MIN_TOKENS", raising=False)
    seen = []
    real = spooled.start
    monkeypatch.setattr(spooled, "start", lambda *a, **k: seen.append(a) or real(*a, **k))
    from servebench.config import LoadConfig, RunConfig
    from servebench.run import orchestrate

    with start_emulator("openai", ttft_ms=2, itl_ms=1) as emu:
        cfg = RunConfig(endpoint=emu.url, launcher="external", model="tiny", results_dir=tmp_path, telemetry=False,
                        load=LoadConfig(requests=20, concurrency=2, warmup=0, workers=1))
        run_dir = orchestrate.run(cfg)
    assert seen == [] and (run_dir / "requests.parquet").exists() and not spooled.found(run_dir)


def _session_cfg(url: str, tmp_path: Path):
    from servebench.config import LoadConfig, RunConfig, SessionConfig, WorkloadConfig

    wl = WorkloadConfig(input_tokens=12, output_tokens=6, sessions=SessionConfig(source="synthetic", turns=4, count=6))
    return RunConfig(endpoint=url, launcher="external", model="tiny", results_dir=tmp_path, telemetry=False,
                     load=LoadConfig(concurrency=3, warmup=1), workload=wl)


def test_a_session_run_spools_its_turns_and_writes_what_memory_would_have(tmp_path, monkeypatch):
    """Each turn goes to the spool once its answer is decoded (bytes and texts leave memory);
    requests.parquet and summary.json are the same bytes as from every turn kept in memory,
    written by the same writer from copies taken as each turn was handed over."""
    from servebench.run import orchestrate, writer

    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")  # a small run spools too
    handed: dict[int, RequestRecord] = {}
    real_add, real_write = spool.Spool.add, writer.write

    def add(self, rec):
        assert self.path.exists() and self.sessions  # the spool is on disk while the load runs
        handed[rec.index] = copy.deepcopy(rec)  # as the in-memory path holds it: bytes and texts
        real_add(self, rec)

    def write(cfg, st, p):
        mem_dir = tmp_path / "memory"
        mem_dir.mkdir()
        spooled_recs = [r for r in st.records if r.index in handed]
        assert spooled_recs and all(r.chunks == [] for r in spooled_recs)  # the bytes left memory
        mem = copy.copy(st)
        mem.run_dir, mem.spools, mem.warnings = mem_dir, [], list(st.warnings)
        mem.records = [copy.deepcopy(handed.get(r.index, r)) for r in st.records]
        for m, r in zip(mem.records, st.records):
            m.input_tokens = r.input_tokens  # the client's counts, made after the load from the texts
        real_write(cfg, mem, p)
        return real_write(cfg, st, p)

    monkeypatch.setattr(spool.Spool, "add", add)
    monkeypatch.setattr(writer, "write", write)
    with start_emulator("openai-chat", ttft_ms=3, itl_ms=1) as emu:
        run_dir = orchestrate.run(_session_cfg(emu.url, tmp_path))
    assert len(handed) == 24 and not spooled.found(run_dir)  # every turn spooled; the crash copy removed
    assert list(run_dir.glob("requests.spool*")) == []  # its read-lag file too, once the writer read it
    recs = runfiles.load_records(run_dir / "requests.parquet")
    assert recs == runfiles.load_records(tmp_path / "memory" / "requests.parquet")
    turns = [r for r in recs if not r.warmup]
    assert all(r.prompt_text and r.reply_text and r.input_tokens > 0 for r in turns)  # the texts came back
    assert (run_dir / "summary.json").read_bytes() == (tmp_path / "memory" / "summary.json").read_bytes()
    assert json.loads((run_dir / "summary.json").read_text())["sessions"]["sessions_completed"] == 6


def test_a_small_session_run_keeps_its_turns_in_memory(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVEBENCH_SPOOL_MIN_TOKENS", raising=False)
    recs = [RequestRecord(index=-1, warmup=True, output_tokens=10**7)]  # warm-up: not the load's
    recs += [RequestRecord(index=i, output_tokens=100, session=i, turn=1) for i in range(50)]
    assert spooled.for_sessions(tmp_path / spool.NAME, "openai-chat", recs) is None
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "5000")
    sp = spooled.for_sessions(tmp_path / spool.NAME, "openai-chat", recs)
    assert sp is not None and sp.sessions
    sp.close()


def test_a_killed_session_run_keeps_its_spooled_turns_and_report_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")
    with start_emulator("openai-chat", ttft_ms=5, itl_ms=20) as emu:
        proc = subprocess.Popen([sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, "--model",
                                 "tiny", "--sessions", "synthetic", "--turns", "5", "--session-count", "60",
                                 "--concurrency", "4", "--input-tokens", "12", "--output-tokens", "10",
                                 "--results-dir", str(tmp_path), "--no-telemetry", "--no-plots"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        found = _kill_once_spooled(proc, tmp_path, spool.NAME, 1, settle_s=1.0)
    run_dir = found[0].parent
    assert not (run_dir / "requests.parquet").exists()
    n = len(list(spool.records(found[0])[1]))
    assert 0 < n < 300
    notes, problems = rebuild.prepare(run_dir)
    assert problems == [] and "spooled" in notes[0]
    recs = runfiles.load_records(run_dir / "requests.parquet")
    assert len(recs) == n and all(r.ok and r.session is not None and r.turn >= 1 for r in recs)
    for r in recs:  # the conversation as sent and answered, kept raw-first
        msgs = json.loads(r.prompt_text)
        assert len(msgs) == 2 * r.turn - 1 and r.reply_text
    summary = runfiles.load_summary(run_dir)
    assert summary["completed"] == n and summary["sessions"]["turns_sent"] == n


def _kill_once_spooled(proc: subprocess.Popen, tmp_path, pattern: str, files: int, settle_s: float) -> list:
    """Wait until `files` spools under tmp_path hold a batch, let a further flush or so land,
    then SIGKILL the run's whole process group; the spools found."""
    try:
        deadline, found = time.monotonic() + 180, []
        while time.monotonic() < deadline and len(found) < files:
            found = [p for p in tmp_path.glob(f"*/{pattern}") if p.stat().st_size > 4000]
            time.sleep(0.2)
        assert len(found) == files, "the run never spooled a batch"
        time.sleep(settle_s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return found


def test_a_flush_is_written_in_slices_of_about_slice_events_and_reads_back_whole(tmp_path):
    """A closed loop's streams end together: one flush of 40 records x ~10 events. Each written
    batch holds at most SLICE_EVENTS events plus one record (each pa.array call holds the GIL),
    and every record comes back, in order."""
    key, records = reference_records("vllm_completions", n=40)
    per = len(records[0].chunks) + 1
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=3600)  # only close() flushes
    for r in records:
        sp.add(r)
    sp.close()
    batches = list(spool.read(tmp_path / spool.NAME)[1])
    assert len(batches) > 1
    for b in batches:
        events = sum(len(c) for c in b.column("chunk_ns").to_pylist()) + b.num_rows
        assert events <= spool.SLICE_EVENTS + per
    assert [i for b in batches for i in b.column("index").to_pylist()] == list(range(40))


def test_slices_keep_every_record_once_in_order():
    recs = [RequestRecord(index=i, chunks=[(0, b"x")] * (i % 7)) for i in range(100)]
    parts = list(spool.slices(recs, events=10))
    assert [r.index for p in parts for r in p] == list(range(100))
    assert all(p for p in parts)
    assert all(sum(len(r.chunks) + 1 for r in p[:-1]) < 10 for p in parts)  # cut as soon as the bound is reached


@pytest.mark.parametrize("realtime", [True, False])
def test_the_spool_thread_takes_the_load_loops_scheduling(tmp_path, monkeypatch, realtime):
    """At normal priority beside a real-time loop, a busy host took the CPU from the spool
    thread while it held the GIL and the loop waited behind it (issue 20): the thread itself
    asks for the loop's policy, and only when the loop runs real-time."""
    import threading

    calls = []
    monkeypatch.setattr(spooled, "realtime_on", lambda: calls.append(threading.current_thread().name) or "SCHED_RR")
    sp = spooled.start(tmp_path / spool.NAME, "openai", realtime=realtime)
    sp.close()
    assert calls == (["servebench-spool"] if realtime else [])
