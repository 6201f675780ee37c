"""calibrate: the error arithmetic against an emulator log, and the client's floor."""

from __future__ import annotations

import os

import pytest

from servebench.run.calibrate import Floor, check, compare, load_warning, measure_floor
from servebench.records import RequestRecord

MS = 1_000_000


def pair(sent=0, arrival=100_000, writes=(50 * MS, 60 * MS, 70 * MS), recv_lag=200_000, idx=0):
    """A client record and the emulator entry for the same request, with known lags."""
    reads = [w + recv_lag for w in writes]
    rec = RequestRecord(index=idx, sent_ns=sent, status=200, end_ns=reads[-1] + 50_000,
                        token_ns=reads, token_counts=[1] * len(reads))
    emu = {"id": str(idx), "outcome": "ok", "arrival_ns": arrival, "token_ns": list(writes), "end_ns": writes[-1]}
    return rec, emu


def test_compare_splits_the_error_into_send_and_receive_lag():
    rec, emu = pair(sent=0, arrival=300_000, recv_lag=200_000)
    acc = compare([rec], [emu])
    assert acc["matched"] == 1 and acc["causality_violations"] == 0
    assert acc["send_lag_ms"]["p50"] == pytest.approx(0.3)
    assert acc["recv_lag_ms"]["p50"] == pytest.approx(0.2)
    assert acc["ttft_err_ms"]["p50"] == pytest.approx(0.5)  # = send lag + receive lag
    assert acc["e2e_err_ms"]["p50"] == pytest.approx(0.55)  # + the 50 us tail after the last token
    assert acc["itl_err_ms"]["max"] == pytest.approx(0.0)


def test_compare_flags_a_read_before_its_write_and_skips_what_it_cannot_match():
    bad, emu = pair(recv_lag=-200_000)
    other, _ = pair(idx=7)
    warm, _ = pair(idx=0)
    warm.warmup = True
    acc = compare([bad, other, warm], [emu])
    assert acc["causality_violations"] == 1 and acc["matched"] == 1 and acc["unmatched"] == 1


def test_load_warning_compares_token_demand_with_the_measured_floor():
    floor = Floor(ttft_overhead_ms=0.2, us_per_token=10.0, ingest_tok_s=50_000)
    assert load_warning(floor, 100, 100.0) is None  # 10k tokens/s
    # one process at 10 us/token: 90k tokens/s at the verdict's 0.9 core; auto sizes at 0.5 (50k)
    assert load_warning(floor, 850, 100.0) is None  # 85k: past auto's headroom, not past the limit
    msg = load_warning(floor, 1000, 100.0)  # 100k tokens/s
    assert msg is not None and "100,000 tokens/s" in msg and "10.0 us/token" in msg and "\n" not in msg
    assert "~90,000 tokens/s with 1 worker(s) at 0.9 core each" in msg
    if (os.cpu_count() or 1) >= 2:
        assert "--workers 2" in msg


def test_measure_floor_against_a_private_emulator():
    f = measure_floor(streams=20, tokens=50)
    assert 0 < f.ttft_overhead_ms < 20
    assert 0 < f.us_per_token < 1000 and f.ingest_tok_s == pytest.approx(0.5e6 / f.us_per_token)


def self_check(load, warm, enabled=None):
    return check(load, warm, enabled).warning


def test_self_check_is_on_by_default_only_above_100_streams():
    from servebench.config import LoadConfig

    warm = [RequestRecord(index=-1, warmup=True, status=200, sent_ns=1, end_ns=2 * 10**9,
                          token_ns=[i * MS for i in range(11)], token_counts=[1] * 11)]  # 1000 tokens/s
    assert self_check(LoadConfig(concurrency=100_000), warm, enabled=False) is None
    # 100 streams is the threshold: not checked even though the demand is absurd for one worker
    assert self_check(LoadConfig(concurrency=100), warm) is None
    assert self_check(LoadConfig(requests=10_000_000), warm) is not None  # a burst of 10M streams
    # open loop: 1e6 req/s x 2 s latency in flight
    assert self_check(LoadConfig(rate=1e6), warm) is not None
    assert self_check(LoadConfig(rate=1.0), warm) is None  # ~3 streams: below the threshold
    assert self_check(LoadConfig(requests=10_000_000), []) is None  # no warm-up token rate: nothing to go on


def test_auto_workers_from_measured_capacity_load_and_free_cores():
    from servebench.run.calibrate import choose_workers

    floor = Floor(ttft_overhead_ms=0.1, us_per_token=10.0, ingest_tok_s=50_000)
    n, why = choose_workers(500, 40_000.0, floor, free=1.6, cpus=2)
    assert n == 1 and "40,000 tokens/s" in why and "50,000" in why
    # 500k tokens/s (5000 streams x 100/s) needs 10 processes: all of them fit on 15 free cores
    n, why = choose_workers(5000, 500_000.0, floor, free=15.2, cpus=16)
    assert n == 10
    # only 3 cores free: capped there, and the reason says so
    n, why = choose_workers(5000, 500_000.0, floor, free=3.4, cpus=16)
    assert n == 3 and "3.4 of 16 cores free -> 3" in why
    assert choose_workers(5000, 500_000.0, floor, free=0.1, cpus=16)[0] == 1  # never zero
    assert choose_workers(5000, None, None, free=8, cpus=16)[0] == 1  # nothing measured: one process


def test_check_records_the_workers_choice_and_its_reason():
    from servebench.run.calibrate import check
    from servebench.config import LoadConfig

    warm = [RequestRecord(index=-1, warmup=True, status=200, sent_ns=1, end_ns=2 * 10**9,
                          token_ns=[i * 10 * MS for i in range(11)], token_counts=[1] * 11)]
    small = check(LoadConfig(concurrency=8), warm)
    assert small.workers == 1 and small.workers_reason == "auto: 8 streams <= 100: one process"
    fixed = check(LoadConfig(concurrency=8, workers=3), warm)
    assert fixed.workers == 3 and fixed.workers_reason == "--workers 3"
    big = check(LoadConfig(concurrency=400), warm)  # runs the self-check: 40k tokens/s asked
    assert big.workers >= 1 and big.workers_reason.startswith("auto: load needs ~40,000 tokens/s")


def test_the_run_self_check_sees_the_warm_up_token_rate(tmp_path):
    """The warm-up records are raw bytes until decoded; the self-check used to read their
    (empty) token times, find no rate and never warn, even for 5000 streams on one process."""
    import asyncio

    from servebench.config import LoadConfig
    from servebench.run.orchestrate import _self_check
    from servebench.run.state import RunState

    ev = b'data: {"id":"x","choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n'
    warm = RequestRecord(index=-1, warmup=True, status=200, sent_ns=1, end_ns=200 * MS,
                         chunks=[(i * 10 * MS, ev) for i in range(11)] + [(200 * MS, b"data: [DONE]\n\n")])
    st = RunState(tmp_path, records=[warm], api="openai-completions")
    asyncio.run(_self_check(LoadConfig(concurrency=100_000, warmup=1), st))  # 100k streams x 100 tokens/s
    assert warm.decoded and len(warm.token_ns) == 11
    assert st.workers_reason.startswith("auto: load needs ~10,000,000 tokens/s")
    assert st.self_check_warning and "tokens/s of stream reads" in st.self_check_warning
