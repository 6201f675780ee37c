"""With --steady-state the summary's figures are over its window: what is divided by the
window's span must be counted in that window (docs/metrics.md, "Steady-state window")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servebench.analysis.metrics import summarize
from servebench.config import LoadConfig, RunConfig
from servebench.emulator import start_emulator
from servebench.records import RequestRecord, counts_array, ns_array
from servebench.run import orchestrate
from servebench.run.writer import _metric_window
from servebench.store.runfiles import load_records

MS = 10**6


def _req(i: int, sent: int, e2e_ms: int, tokens: int) -> RequestRecord:
    stamps = [sent + (10 + k) * MS for k in range(tokens)]
    return RequestRecord(index=i, sent_ns=sent, scheduled_ns=sent, slot_ns=sent, end_ns=sent + e2e_ms * MS,
                         status=200, token_ns=ns_array(stamps), token_counts=counts_array([1] * tokens),
                         server_output_tokens=tokens, decoded=True)


def test_energy_window_and_tokens_follow_the_steady_window():
    t0 = 10**12
    recs = [_req(i, t0 + s * MS, 100, n) for i, (s, n) in enumerate([(0, 3), (30, 5), (100, 7), (130, 11), (200, 13)])]
    whole = summarize(recs, target_concurrency=2)
    assert _metric_window(whole, t0, t0 + 300 * MS) == (t0, t0 + 300 * MS, 39)
    s = summarize(recs, target_concurrency=2, steady_state=True)
    w = s["steady_state"]
    assert w["applied"]
    start, end, tokens = _metric_window(s, t0, t0 + 300 * MS)
    assert (start, end) == (t0 + w["start_offset_ns"], t0 + w["end_offset_ns"])
    # the tokens of the completions inside the window, which its throughput counts
    inside = [r for r in recs if start <= r.end_ns <= end]
    assert inside and len(inside) < len(recs)
    assert tokens == sum(r.server_output_tokens for r in inside)
    assert tokens / s["duration_s"] == pytest.approx(s["output_token_throughput"])


def test_client_cpu_is_per_second_of_the_whole_load_under_steady_state(tmp_path):
    with start_emulator("openai", ttft_ms=20, itl_ms=5) as emu:
        cfg = RunConfig(endpoint=emu.url, launcher="external", model="tiny", results_dir=tmp_path, steady_state=True,
                        telemetry=False, plots=False, load=LoadConfig(requests=12, concurrency=4, warmup=0, workers=1))
        cfg.workload.input_tokens, cfg.workload.output_tokens = 16, 32
        run_dir = Path(orchestrate.run(cfg))
    s = json.loads((run_dir / "summary.json").read_text())
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup and r.sent_ns]
    whole_s = (max(r.end_ns for r in recs) - min(r.sent_ns for r in recs)) / 1e9
    assert s["steady_state"]["applied"] and s["duration_s"] < whole_s
    c = s["client"]
    assert c["cpu_cores"] == pytest.approx(c["cpu_s"] / whole_s)
    streamed = sum(int(sum(r.token_counts)) for r in recs)
    assert c["cpu_us_per_token"] == pytest.approx(c["cpu_s"] * 1e6 / streamed)


def test_mean_in_flight_is_over_the_window_with_every_request_in_flight_in_it():
    # a closed loop of 2 that always has 2 in flight: over the window it is 2, not less because
    # requests sent before the window (left out of the latencies) still ran in it
    t0 = 10**12
    recs = [_req(2 * k + j, t0 + k * 100 * MS + j * 40 * MS, 100, 3) for k in range(12) for j in range(2)]
    s = summarize(recs, target_concurrency=2, steady_state=True)
    assert s["steady_state"]["applied"] and s["steady_state"]["requests_left_out"] > 0
    assert s["concurrency"]["mean_in_flight"] == pytest.approx(2.0, abs=0.01)
