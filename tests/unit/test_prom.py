"""/metrics parsing from recorded fixtures, and the scraper against a local http.server."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from servebench.telemetry.prom import ENGINE_METRICS, PromScraper, detect_engine, parse_metrics

FIX = Path(__file__).parents[1] / "fixtures" / "metrics"


def fixture(name: str) -> str:
    return (FIX / name).read_bytes().decode()


@pytest.mark.parametrize(
    "name,engine,values,sources",
    [
        ("vllm.txt", "vllm",
         {"running": 12, "waiting": 3, "kv_cache_usage": 0.42, "prompt_tokens_total": 8192, "generation_tokens_total": 1536},  # noqa: E501
         {"kv_cache_usage": "vllm:kv_cache_usage_perc"}),
        ("vllm_v0.txt", "vllm", {"kv_cache_usage": 0.42, "running": 12}, {"kv_cache_usage": "vllm:gpu_cache_usage_perc"}),
        # Two data-parallel engines: counts add up, the usage fraction is the fuller engine's.
        ("vllm_dp2.txt", "vllm",
         {"running": 25, "waiting": 8, "kv_cache_usage": 0.72, "prompt_tokens_total": 17384, "generation_tokens_total": 3172},  # noqa: E501
         {}),
        ("tgi.txt", "tgi",
         {"running": 8, "waiting": 5, "batch_tokens": 3584, "prompt_tokens_total": 4088, "generation_tokens_total": 1600},  # noqa: E501
         {"generation_tokens_total": "tgi_request_generated_tokens_sum"}),
        ("sglang.txt", "sglang",
         {"running": 162, "waiting": 2826, "kv_cache_usage": 0.28, "batch_tokens": 123859,
          "prompt_tokens_total": 8128902, "generation_tokens_total": 7557572},
         {"running": "sglang:num_running_reqs"}),
        ("lightllm.txt", "lightllm",
         {"running": 24, "waiting": 7, "prompt_tokens_total": 38 * 512, "generation_tokens_total": 38 * 128},
         {"waiting": "lightllm_queue_size"}),
    ],
)  # fmt: skip
def test_parse_fixture(name, engine, values, sources):
    got, src = parse_metrics(fixture(name), ENGINE_METRICS[engine])
    for k, v in values.items():
        assert got[k] == pytest.approx(v), k
    for k, v in sources.items():
        assert src[k] == v
    # What an engine doesn't expose is absent, not zero.
    assert set(got) == set(src) and set(got) <= set(ENGINE_METRICS[engine])
    assert detect_engine(fixture(name)) == engine


def test_parse_ignores_lookalike_names_and_comments():
    text = (
        "# HELP vllm:num_requests_running fake\n"
        "vllm:num_requests_running_total 99\n"  # longer name: not ours
        'vllm:num_requests_running{engine="0"} 4 1700000000000\n'  # with a timestamp
        "vllm:num_requests_waiting 2\r\n"
    )
    got, _ = parse_metrics(text, ENGINE_METRICS["vllm"])
    assert got == {"running": 4, "waiting": 2}


class _State:
    body = b""
    status = 200
    hits = 0


@contextmanager
def serve(state: _State):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state.hits += 1
            body = state.body if self.path == "/metrics" else b"not found"
            code = state.status if self.path == "/metrics" else 404
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def vllm_body(gen: float, prompt: float, running: float = 12, prefix: tuple[float, float] | None = None) -> bytes:
    text = fixture("vllm.txt")
    if prefix is not None:  # (queries, hits): vLLM v1's prefix-cache counters, in tokens
        text += ('vllm:prefix_cache_queries_total{engine="0",model_name="m"} %s\n'
                 'vllm:prefix_cache_hits_total{engine="0",model_name="m"} %s\n' % prefix)
    text = text.replace("} 1536.0", f"}} {gen}").replace("} 8192.0", f"}} {prompt}")
    return text.replace('vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-2-7b-hf"} 12.0',
                        f'vllm:num_requests_running{{engine="0",model_name="meta-llama/Llama-2-7b-hf"}} {running}').encode()  # fmt: skip


def test_scraper_counter_delta_brackets_the_window(tmp_path):
    st = _State()
    st.body = vllm_body(gen=1000, prompt=5000, running=2, prefix=(1000, 100))
    with serve(st) as url:
        s = PromScraper(url, "vllm", interval_s=0.02)
        s.start()
        time.sleep(0.05)
        s.scrape_now()  # the orchestrator's mark at the first send
        w0 = time.perf_counter_ns()
        st.body = vllm_body(gen=1400, prompt=6000, running=10, prefix=(3000, 1100))
        time.sleep(0.1)
        w1 = time.perf_counter_ns()
        s.scrape_now()
        time.sleep(0.03)
        st.body = vllm_body(gen=9999, prompt=9999, running=0, prefix=(9999, 0))  # after the window: ignored
        time.sleep(0.05)
        s.mark_window(w0, w1)
        s.stop()
    summ = s.summary()
    assert summ["available"] is True and summ["engine"] == "vllm" and summ["failed_scrapes"] == 0
    assert summ["generation_tokens"]["delta"] == 400 and summ["prompt_tokens"]["delta"] == 1000
    assert 0 <= summ["generation_tokens"]["slack_before_s"] < 0.05
    assert 0 <= summ["generation_tokens"]["slack_after_s"] < 0.05
    # Gauges: only scrapes inside the window; the first may still see the old page.
    assert summ["running"]["peak"] == 10 and 2 <= summ["running"]["mean"] <= 10
    assert summ["kv_cache_usage"] == {"mean": 0.42, "peak": 0.42}
    assert summ["batch_tokens"] is None  # vLLM has no such series
    assert summ["prefix_cache_hit_rate"] == 0.5  # (1100 - 100) / (3000 - 1000) tokens in the window
    assert summ["sources"]["generation_tokens_total"] == "vllm:generation_tokens_total"
    assert s.write(tmp_path) == ["server_metrics.parquet"]
    df = pd.read_parquet(tmp_path / "server_metrics.parquet")
    assert len(df) >= 5 and (df["t_send_ns"] <= df["t_ns"]).all() and (df["t_ns"] <= df["t_recv_ns"]).all()
    assert df["generation_tokens_total"].max() == 9999


def test_scraper_autodetects_unknown_engine_and_counts_failures():
    st = _State()
    st.body = fixture("tgi.txt").encode()
    with serve(st) as url:
        s = PromScraper(url, "openai", interval_s=0.02)
        s.start()
        time.sleep(0.06)
        st.status = 503
        time.sleep(0.06)
        s.stop()
    summ = s.summary()
    assert summ["engine"] == "tgi" and summ["running"]["peak"] == 8
    assert summ["failed_scrapes"] >= 1 and "503" in summ["last_error"]
    assert summ["generation_tokens"] is None  # no window marked: no delta invented


def test_scraper_404_is_unavailable_with_hint():
    st = _State()
    st.status = 404
    with serve(st) as url:
        s = PromScraper(url, "sglang", interval_s=0.02)
        s.start()
        time.sleep(0.1)
        s.stop()
        hits = st.hits
    summ = s.summary()
    assert summ["available"] is False and "404" in summ["reason"] and "--enable-metrics" in summ["reason"]
    assert hits == 1  # gave up instead of hammering a route that isn't there


def test_scraper_unreachable_and_non_http():
    s = PromScraper("http://127.0.0.1:9", "vllm", interval_s=0.02, timeout_s=0.2)
    s.start()
    time.sleep(0.05)
    s.stop()
    summ = s.summary()
    assert summ["available"] is False and summ["reason"].startswith("no successful scrape: ConnectError")
    s = PromScraper("sagemaker://endpoint", "tgi")
    s.start()
    s.stop()
    assert s.summary()["available"] is False and "no HTTP /metrics" in s.summary()["reason"]


@pytest.mark.parametrize("engine,name", [("vllm", "vllm.txt"), ("tgi", "tgi.txt"), ("sglang", "sglang.txt"), ("lightllm", "lightllm.txt")])  # fmt: skip
def test_engine_spec_names_match_the_fixtures(engine, name):
    """The names in backends/<engine>/spec.yaml find every series the defaults find."""
    from servebench.engines.specs import load_spec

    spec_vals, _ = parse_metrics(fixture(name), load_spec(engine).metrics)
    default_vals, _ = parse_metrics(fixture(name), ENGINE_METRICS[engine])
    assert spec_vals == default_vals and {"running", "waiting", "generation_tokens_total"} <= set(spec_vals)
