"""A slice of each shipped trace replayed against real vLLM CPU (`tiny`, lengths scaled to fit):
every request's input length as the server counts it is exactly the replay's, and for Mooncake
the server's prefix-cache hit rate is within 10 points of the trace's ideal reuse."""

from __future__ import annotations

import json

import httpx
import pytest

from servebench.load.traces import load_trace
from tests.integration._cli import load_run, prom_counter, servebench

pytestmark = pytest.mark.integration

FIT = ["--max-input-tokens", "900", "--max-output-tokens", "16"]  # the session server's max-model-len is 1024


def _replay(url: str, tmp_path, name: str, *trace_args: str):
    res = servebench("run", "--backend", "vllm", "--model", "tiny", "--endpoint", url, "--warmup", "1",
                     *trace_args, *FIT, "--results-dir", str(tmp_path), "--name", name, cwd=tmp_path)
    run, summary, df = load_run(res.expect_ok())
    m = df[~df["warmup"]]
    assert summary["completed"] == len(m) and summary["failed"] == 0
    # exact: the server's own count of every prompt is the length the replay asked for
    assert (m["server_input_tokens"] == m["input_tokens"]).all(), m[["input_tokens", "server_input_tokens"]]
    assert (m["server_output_tokens"] == m["output_tokens"]).all()
    assert summary["input_tokens"]["mismatched_requests"] == 0
    assert (m["sent_ns"] >= m["scheduled_ns"]).all()
    return summary, m


def _expected_lengths(reqs, scale: float) -> list[int]:
    return [min(900, max(2, round(r.input_tokens * scale))) for r in reqs]


def test_azure_slice_exact_lengths(vllm_server, tmp_path):
    summary, m = _replay(vllm_server.base_url, tmp_path, "azure", "--trace", "azure-conv-2023", "--requests", "15",
                         "--trace-speed", "2", "--trace-scale-lengths", "0.5")
    reqs = load_trace("azure-conv-2023").requests[:15]
    want = _expected_lengths(reqs, 0.5)
    assert list(m.sort_values("index")["input_tokens"]) == want
    wl = summary["workload"]
    assert wl["trace"]["requests"] == 15 and wl["trace"]["format"] == "azure"
    assert wl["clipped"]["input"] == sum(w != max(1, round(r.input_tokens * 0.5)) for w, r in zip(want, reqs))
    assert summary["schedule"]["send_error_ms"]["n"] == 15
    # the replay kept the trace's gaps, compressed 2x
    sched = (m.sort_values("index")["scheduled_ns"] - m["scheduled_ns"].min()) / 1e9
    trace_t = [(r.t_s - reqs[0].t_s) / 2 for r in reqs]
    assert list(sched) == pytest.approx(trace_t, abs=1e-6)


def _prefix_counters(url: str) -> tuple[float, float]:
    return prom_counter(url, "vllm:prefix_cache_queries_total"), prom_counter(url, "vllm:prefix_cache_hits_total")


def test_mooncake_slice_exact_lengths_and_prefix_reuse(vllm_server, tmp_path):
    url = vllm_server.base_url
    httpx.post(url + "/reset_prefix_cache", timeout=30).raise_for_status()  # earlier tests' prompts out
    q0, h0 = _prefix_counters(url)
    # 115-125 s: 16 requests; lengths x 0.25 make the 512-token blocks 128 tokens, vLLM CPU's block size
    summary, m = _replay(url, tmp_path, "mooncake", "--trace", "mooncake-conversation", "--trace-window", "115:125",
                         "--trace-scale-lengths", "0.25")
    q1, h1 = _prefix_counters(url)
    reqs = [r for r in load_trace("mooncake-conversation").requests if 115 <= r.t_s < 125]
    assert len(m) == len(reqs) == 16
    assert list(m.sort_values("index")["input_tokens"]) == _expected_lengths(reqs, 0.25)
    ideal = summary["workload"]["prefix"]
    assert ideal["block_tokens"] == 128 and ideal["share"] > 0.1
    measured = (h1 - h0) / (q1 - q0)  # warm-up included: its tokens share nothing, so it only dilutes
    print(json.dumps({"ideal": ideal["share"], "measured": measured}))
    assert abs(measured - ideal["share"]) <= 0.10, (measured, ideal)
