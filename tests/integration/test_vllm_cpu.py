"""`servebench run` against a real vLLM CPU server: every request succeeds with exactly the
requested token counts (as the server counts them), and summary.json follows from the raw
records in requests.parquet."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.integration._cli import load_run, prom_counter, servebench

pytestmark = pytest.mark.integration

INPUT, OUTPUT = 512, 128


def _run_args(url: str, tmp_path, name: str, *extra: str) -> list[str]:
    return ["run", "--backend", "vllm", "--model", "tiny", "--endpoint", url,
            "--input-tokens", str(INPUT), "--output-tokens", str(OUTPUT), "--warmup", "2",
            "--results-dir", str(tmp_path), "--name", name, *extra]


def max_overlap(m) -> int:
    """Most requests in flight at one instant, from the raw sent/end stamps."""
    events = sorted([(t, 1) for t in m.sent_ns] + [(t, -1) for t in m.end_ns], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def check_run(run_dir, n: int):
    """Per-request facts and summary.json recomputed from the parquet's raw stamps."""
    run, summary, df = load_run(run_dir)
    m = df[~df["warmup"]]
    assert len(m) == n and len(df) == n + 2
    assert (m["status"] == 200).all() and m["error"].isna().all(), m[["status", "error"]].value_counts()
    assert (m["input_tokens"] == INPUT).all() and (m["server_input_tokens"] == INPUT).all()
    assert (m["output_tokens"] == OUTPUT).all() and (m["server_output_tokens"] == OUTPUT).all()
    assert (m["finish_reason"] == "length").all()
    # every generated token is in a timed stream event. How many vLLM puts in one event depends
    # on how far its output processing lags, that is on host speed (a 100-burst on a busy 2-core
    # host: 61 events for 128 tokens), so only streaming itself is asserted: more than one event
    assert m["token_counts"].map(lambda c: int(np.sum(c))).eq(OUTPUT).all()
    assert (m["token_counts"].map(len) > 1).all() and (m["token_ns"].map(len) == m["token_counts"].map(len)).all()
    for r in m.itertuples():
        t = np.asarray(r.token_ns)
        assert r.scheduled_ns <= r.sent_ns < r.first_byte_ns <= t[0] and t[-1] <= r.end_ns
        assert (np.diff(t) >= 0).all()

    assert summary["status"] == "complete" and run["status"] == "complete"
    assert run["engine"]["name"] == "vllm" and run["engine"]["version"].startswith("0.32")
    assert summary["completed"] == n and summary["failed"] == 0
    assert summary["input_tokens"]["total"] == int(m["server_input_tokens"].sum())
    assert summary["output_tokens"]["total"] == int(m["server_output_tokens"].sum())
    start, end = int(m["sent_ns"].min()), int(m["end_ns"].max())
    dur = (end - start) / 1e9
    assert summary["duration_s"] == pytest.approx(dur, rel=1e-9)
    assert summary["output_token_throughput"] == pytest.approx(n * OUTPUT / dur, rel=1e-9)
    ttft = (m["token_ns"].map(lambda t: int(t[0])) - m["sent_ns"]) / 1e6
    e2e = (m["end_ns"] - m["sent_ns"]) / 1e6
    assert summary["ttft_ms"]["mean"] == pytest.approx(ttft.mean(), rel=1e-9)
    assert summary["ttft_ms"]["p99"] == pytest.approx(np.percentile(ttft, 99), rel=1e-9)
    assert summary["e2e_ms"]["mean"] == pytest.approx(e2e.mean(), rel=1e-9)
    assert summary["e2e_ms"]["max"] == pytest.approx(e2e.max(), rel=1e-9)
    # ITL as docs/metrics.md defines it: an event carrying k tokens gives k gaps of gap/k
    gaps = np.concatenate([np.repeat(np.diff(np.asarray(t)) / c[1:], c[1:])
                           for t, c in zip(m["token_ns"], m["token_counts"])]) / 1e6
    firsts = m["token_counts"].map(lambda c: int(c[0]))
    assert summary["itl_ms"]["n"] == len(gaps) == n * OUTPUT - firsts.sum()
    assert summary["itl_ms"]["mean"] == pytest.approx(gaps.mean(), rel=1e-9)
    assert summary["concurrency"]["max_in_flight"] == max_overlap(m)
    return run, summary, m, df


def _wait_counter(url: str, name: str, want: float, timeout_s: float = 10.0) -> float:
    # the server updates its counters as outputs are processed; allow it a moment to settle
    deadline = time.monotonic() + timeout_s
    while True:
        got = prom_counter(url, name)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_burst_of_100(vllm_server, tmp_path):
    url = vllm_server.base_url
    prompt0 = prom_counter(url, "vllm:prompt_tokens_total")
    gen0 = prom_counter(url, "vllm:generation_tokens_total")

    res = servebench(*_run_args(url, tmp_path, "burst", "--requests", "100", "--seed", "1"), cwd=tmp_path)
    run_dir = res.expect_ok()
    assert run_dir.parent == tmp_path and run_dir.name.endswith("burst")
    run, summary, m, df = check_run(run_dir, 100)

    assert m["scheduled_ns"].nunique() == 1  # burst: one release instant for all
    assert run["config"]["load"]["concurrency"] is None and run["config"]["load"]["rate"] is None
    assert max_overlap(m) > 50  # most of the burst really was in flight together
    # The server's own counters saw exactly the tokens the records say (warm-up included), plus
    # the one probe request servebench sends before the load (its counts are in run.json).
    probe = run["server"]["info"]["request_probe"]
    assert probe["status"] == 200 and probe["dropped"] == [] and probe["output_tokens"] == 2
    want_prompt = prompt0 + int(df["server_input_tokens"].sum()) + probe["prompt_tokens"]
    want_gen = gen0 + int(df["server_output_tokens"].sum()) + probe["output_tokens"]
    assert _wait_counter(url, "vllm:prompt_tokens_total", want_prompt) == want_prompt
    assert _wait_counter(url, "vllm:generation_tokens_total", want_gen) == want_gen


def test_concurrency_4(vllm_server, tmp_path):
    res = servebench(*_run_args(vllm_server.base_url, tmp_path, "c4", "--requests", "40",
                                "--concurrency", "4"), cwd=tmp_path)
    run, summary, m, _ = check_run(res.expect_ok(), 40)

    assert summary["concurrency"]["target"] == 4
    assert max_overlap(m) == 4  # never more than 4, and the closed loop did reach 4
    # a slot takes its next request only after its previous one ended: the k-th send
    # comes after the (k-4)-th end
    sends, ends = np.sort(m["sent_ns"].to_numpy()), np.sort(m["end_ns"].to_numpy())
    assert (sends[4:] >= ends[:-4]).all()
    # mean in flight is Σ latency / span, from the raw stamps. Its value is not asserted:
    # on a starved 2-core host (another vLLM server running) the client's event loop can
    # stall for 100s of ms, and the summary then warns that C was not held.
    span = m["end_ns"].max() - m["sent_ns"].min()
    held = (m["end_ns"] - m["sent_ns"]).sum() / span
    assert summary["concurrency"]["mean_in_flight"] == pytest.approx(held, rel=1e-6)
    assert 1.0 <= held <= 4.0
