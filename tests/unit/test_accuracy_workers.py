"""--workers N: one plan, N processes, one t0; records merged back by position."""

from __future__ import annotations

import socket

import pytest

from servebench.adapters import ADAPTERS
from servebench.run.calibrate import run_plan
from servebench.emulator import held, start_emulator
from servebench.records import RequestRecord
from servebench.transport.http import HttpTransport
from servebench.load.schedule import split_plan
from servebench.load.split import SplitLoad
from servebench.load.workers import WorkerError, run_split

MS = 1_000_000


def wires(url: str, n: int, tokens: int = 4) -> list[bytes]:
    ad, enc = ADAPTERS["openai-completions"], HttpTransport(url)
    return [enc.encode(ad.build("x", tokens, model="m"), i) for i in range(n)]


def test_concurrency_is_split_and_held_across_workers(tmp_path):
    with start_emulator("openai", 5, 2, log=tmp_path / "e.jsonl") as h:
        recs = run_plan(h.url, 30, concurrency=5, output_tokens=6, workers=2)
        h.stop()
        log = h.records()
    assert [r.index for r in recs] == list(range(30)) and all(r.ok for r in recs)
    assert sorted(int(r["id"]) for r in log) == list(range(30))
    # 3 + 2 slots: the emulator never sees more than 5 at once, and does see 5
    assert held(log)[0] == 5


def test_requests_are_dealt_in_proportion_to_each_workers_slots():
    # 3 slots over 2 workers (2 + 1): the 1-slot worker dealt half the requests would run alone
    # for the second half of the run, one in flight instead of three
    parts = split_plan(list(range(60)), list(range(0, 600, 10)), 3, 2)
    assert [(len(idx), c) for idx, _, c in parts] == [(40, 2), (20, 1)]
    assert sorted(i for idx, _, _ in parts for i in idx) == list(range(60))
    assert all(offs == [10 * i for i in idx] for idx, offs, _ in parts)  # global release times kept
    assert [len(idx) for idx, _, _ in split_plan(list(range(9)), None, 4, 2)] == [5, 4]  # even: round-robin
    assert [idx for idx, _, _ in split_plan(list(range(4)), None, None, 2)] == [[0, 2], [1, 3]]


def test_an_uneven_split_still_holds_its_concurrency_to_the_end(tmp_path):
    means = []
    for w in (1, 2):  # side by side on this host: no absolute figure that depends on its speed
        with start_emulator("openai", 20, 5, log=tmp_path / f"e{w}.jsonl") as h:
            recs = run_plan(h.url, 60, concurrency=3, output_tokens=10, workers=w)
            h.stop()
            log = h.records()
        assert all(r.ok for r in recs)
        means.append(held(log)[1])  # time-weighted mean in flight
    assert means[1] > 0.9 * means[0]  # 2.0 against 3.0 when the shares ignored the slots


def test_rate_plan_keeps_global_release_times_from_one_t0(tmp_path):
    n = 20
    offsets = [i * 4 * MS for i in range(n)]
    with start_emulator("openai", 2, 1, log=tmp_path / "e.jsonl") as h:
        recs = [RequestRecord(index=i) for i in range(n)]
        stats = run_split(SplitLoad(h.url, "http", wires(h.url, n), recs, offsets, None, None, 2, connections=4))
    assert stats.released == stats.done == n
    # both workers released on the same clock: each request at t0 + its global offset
    assert [r.scheduled_ns - stats.t0_ns for r in recs] == offsets
    lags = sorted(r.sent_ns - r.scheduled_ns for r in recs)
    assert lags[0] >= 0 and lags[n // 2] < 5 * MS
    assert all(r.status == 200 and r.end_ns > r.sent_ns for r in recs)


def test_burst_across_workers_releases_everything_at_t0(tmp_path):
    with start_emulator("openai", 2, 1, log=tmp_path / "e.jsonl") as h:
        recs = [RequestRecord(index=i) for i in range(16)]
        stats = run_split(SplitLoad(h.url, "http", wires(h.url, 16), recs, [0] * 16, None, None, 2))
    assert {r.scheduled_ns for r in recs} == {stats.t0_ns}
    assert min(r.sent_ns for r in recs) >= stats.t0_ns


def test_unreachable_server_is_a_one_line_worker_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(WorkerError, match=r"^load worker: cannot connect to 127\.0\.0\.1") as ei:
            run_split(SplitLoad(url, "http", wires(url, 4), [RequestRecord(index=i) for i in range(4)], None, 2, None, 2))
    assert "\n" not in str(ei.value)


def test_servebench_run_with_two_workers_end_to_end(tmp_path):
    import json
    import subprocess
    import sys

    with start_emulator("openai", 10, 2, log=tmp_path / "e.jsonl") as h:
        p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--endpoint", h.url, "--model", "tiny",
                            "--requests", "20", "--input-tokens", "16", "--output-tokens", "6", "--concurrency", "4",
                            "--warmup", "1", "--workers", "2", "--results-dir", str(tmp_path), "--no-telemetry"],
                           capture_output=True, text=True, timeout=120)
        h.stop()
        log = h.records()
    assert p.returncode == 0, p.stderr
    run_dir = tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] == 20 and summary["failed"] == 0
    assert summary["client"]["workers"] == 2 and summary["client"]["cpu_s"] > 0  # the workers' CPU, merged
    assert summary["connections"]["opened"] >= 4  # opened by the workers before t0
    # warm-up (index -1) in the parent, then 0..19 across the workers, each matched by X-Request-Id
    assert [r["id"] for r in log if not r["id"].lstrip("-").isdigit()] == ["servebench-probe"]  # the pre-load probe
    assert sorted(int(r["id"]) for r in log if r["id"] != "servebench-probe") == list(range(-1, 20))
    assert held([r for r in log if r["id"] != "-1"])[0] == 4


def test_ctrl_c_stops_the_workers_and_keeps_what_they_measured(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import psutil

    with start_emulator("openai", 10, 10, log=tmp_path / "e.jsonl") as h:
        p = subprocess.Popen([sys.executable, "-m", "servebench.cli", "run", "--endpoint", h.url, "--model", "tiny",
                              "--requests", "40", "--input-tokens", "16", "--output-tokens", "300", "--concurrency",
                              "4", "--warmup", "0", "--workers", "2", "--results-dir", str(tmp_path),
                              "--no-telemetry"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while 'vllm:num_requests_running{model_name="emulator"} 4.0' not in httpx.get(h.url + "/metrics").text:
                assert time.monotonic() < deadline and p.poll() is None, "the load never started"
                time.sleep(0.05)
            workers = psutil.Process(p.pid).children(recursive=True)
            os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err  # Ctrl-C: 128 + SIGINT
    assert len(workers) == 2 and not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    summary = json.loads((tmp_path / out.strip().splitlines()[-1].split("/")[-1] / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["failed"] + summary["completed"] >= 4  # the 4 in flight were kept, as cancelled


def test_workers_decode_their_records_and_send_back_no_raw_bytes(tmp_path):
    n = 8
    with start_emulator("openai", 2, 1, log=tmp_path / "e.jsonl") as h:
        recs = [RequestRecord(index=i) for i in range(n)]
        run_split(SplitLoad(h.url, "http", wires(h.url, n, tokens=5), recs, [0] * n, None, None, 2,
                            adapter="openai-completions"))
        raw = [RequestRecord(index=i) for i in range(n)]
        run_split(SplitLoad(h.url, "http", wires(h.url, n, tokens=5), raw, [0] * n, None, None, 2))
    assert all(r.decoded and r.chunks == [] for r in recs)
    assert all(r.server_output_tokens == 5 and sum(r.token_counts) == 5 and r.ok for r in recs)
    # without an adapter the raw bytes come back for the parent to decode, as before
    assert all(not r.decoded and r.chunks for r in raw)
    from servebench.analysis.decode import decode_records

    decode_records(ADAPTERS["openai-completions"], recs + raw)  # already-decoded ones are kept as they are
    assert all(r.server_output_tokens == 5 and r.ok for r in recs + raw)


def test_a_spooled_split_run_reaches_the_parent_with_its_arrays_on_disk(tmp_path):
    """--workers N on a spooled run: the parent spills each batch's token arrays as it arrives
    (it used to hold every worker's at once, issue 20), and what the records say is what the
    emulator sent."""
    from servebench.load import spooled
    from servebench.records import token_arrays

    n = 10
    recs = [RequestRecord(index=i) for i in range(n)]
    with start_emulator("openai", 2, 1) as h:
        load = SplitLoad(h.url, "http", wires(h.url, n, tokens=5), recs, None, 4, None, 2,
                         adapter="openai-completions", spool_dir=tmp_path, on_records=spooled.spiller(tmp_path))
        stats = run_split(load)
    got = load.records
    assert all(r.ok and r.decoded and r.tok is not None and r.tok.src is not None for r in got)
    assert all(len(r.token_ns) == 0 and r.tok.streamed == 5 for r in got)
    assert all(sum(token_arrays(r)[1]) == 5 and len(token_arrays(r)[0]) == r.tok.events for r in got)
    assert sorted(p.name for p in spooled.found(tmp_path)) == ["requests.spool.w0.arrow", "requests.spool.w1.arrow"]
    assert stats.done == n


def test_held_is_peak_and_time_weighted_mean_of_open_streams():
    log = [{"arrival_ns": 0, "end_ns": 10}, {"arrival_ns": 5, "end_ns": 15}]
    assert held(log) == (2, pytest.approx(20 / 15))  # 1 open for 10 ns, 2 for 5: area 20 over 15 ns
    assert held([]) == (0, 0.0)


def test_the_summary_counts_the_workers_and_connections_the_load_used(tmp_path):
    import json
    import subprocess
    import sys

    with start_emulator("openai", 2, 1) as h:
        p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--endpoint", h.url, "--model", "tiny",
                            "--requests", "8", "--concurrency", "2", "--workers", "4", "--warmup", "2",
                            "--input-tokens", "16", "--output-tokens", "4", "--no-plots", "--no-telemetry",
                            "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    s = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    # 2 slots: 2 processes ran, not the 4 asked (the client check divides CPU by this)
    assert s["client"]["workers"] == run["workers"]["count"] == 2 and "4 asked" in run["workers"]["reason"]
    # the workers' own connections, one a slot; the warm-up's were closed before they started
    assert s["connections"]["opened"] == 2


_HALVES = r'''
import os, pickle, signal, struct, sys, time
from multiprocessing.connection import Connection
from servebench.records import RequestRecord
from servebench.load.loop import LoadStats
c = Connection(int(sys.argv[1]))
job = c.recv()
c.send(("ready",))
c.recv()  # t0
recs = [RequestRecord(index=i, sent_ns=1, end_ns=2, status=200) for i in range(len(job["records"]))]
data = pickle.dumps(("records", 0, recs))
os.write(c.fileno(), struct.pack("!i", len(data)) + data[: len(data) // 2])
time.sleep(0.3)  # the parent is now blocked reading the rest of the message
os.kill(os.getppid(), signal.SIGINT)  # and gets the user's Ctrl-C there
time.sleep(0.5)
os.write(c.fileno(), data[len(data) // 2:])
c.send(("done", [], LoadStats(done=len(recs)), []))
time.sleep(0.5)
'''


def test_a_ctrl_c_while_a_message_is_half_read_keeps_that_workers_records():
    import signal
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    from servebench.load import workers

    n = 40
    load = SplitLoad("http://127.0.0.1:1", "http", [b""] * n, [RequestRecord(index=i) for i in range(n)],
                     [0] * n, None, None, 1)
    parts = load.parts()
    mine, theirs = socket.socketpair()
    p = subprocess.Popen([sys.executable, "-c", _HALVES, str(theirs.fileno())], pass_fds=(theirs.fileno(),))
    theirs.close()
    ch = workers._Proc(p, Connection(mine.detach()))
    ch.send(workers.jobs(load, parts)[0])
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # answered once every record is in
            workers.collect([ch], load, parts)
    finally:
        signal.signal(signal.SIGINT, old)
        ch.close()
    assert all(r.status == 200 for r in load.records)  # none lost with a worker taken for dead
