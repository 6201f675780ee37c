"""The orchestrator's sequence over make_samplers(): start, marks, stop, write, summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from servebench.launchers.base import Server
from servebench.telemetry import finalize, gpu_host_info, make_samplers

from tests.unit.test_prom import _State, fixture, serve
from tests.unit.test_telemetry_nvml import FakeNvml


def test_full_sequence_is_json_clean(tmp_path):
    st = _State()
    st.body = fixture("vllm.txt").encode()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with serve(st) as url:
            server = Server(base_url=url, engine="vllm", adapter="openai-completions", pid=child.pid)
            samplers = make_samplers(server, gpus=[0], interval_s=0.02, nvml=FakeNvml(), metrics_interval_s=0.05)
            assert [s.name for s in samplers] == ["gpu", "process", "server_metrics"]
            info = gpu_host_info(samplers)
            for s in samplers:
                s.start()
            time.sleep(0.05)
            for s in samplers:
                s.sample_now()
            w0 = time.perf_counter_ns()
            time.sleep(0.2)
            w1 = time.perf_counter_ns()
            for s in samplers:
                s.sample_now()
            for s in samplers:
                s.mark_window(w0, w1)
                s.stop()
    finally:
        child.kill()
        child.wait()
    files = sorted(f for s in samplers for f in s.write(tmp_path))
    assert files == ["gpu.parquet", "process.parquet", "server_metrics.parquet"]
    tele = finalize({s.name: s.summary() for s in samplers}, output_tokens=50)
    assert all(v["available"] for v in tele.values()), tele
    # The marks were sampled, so the counter brackets are tight and the delta exact (0 here).
    assert tele["server_metrics"]["generation_tokens"]["delta"] == 0
    assert tele["server_metrics"]["generation_tokens"]["slack_before_s"] < 0.01
    assert tele["gpu"]["total"]["joules_per_output_token"] > 0
    assert info["gpus"][0]["uuid"] == "GPU-aaa" and info["cuda_driver_version"] == "12.4"
    # One-line headlines for the console report.
    assert tele["gpu"]["headline"].startswith("1 GPU(s): util % 90, power W 200, energy J ")
    assert "J/output token" in tele["gpu"]["headline"]
    assert tele["server_metrics"]["headline"] == (
        "running mean 12.0, peak 12, waiting peak 3, KV-cache peak % 42, server-counted output tokens 0"
    )
    assert tele["process"]["headline"].startswith("CPU cores mean ")
    json.dumps({"telemetry": tele, "gpus": info}, allow_nan=False)  # summary.json must be strict JSON


def test_engine_spec_supplies_metric_names_and_route(monkeypatch):
    from servebench.engines import specs

    real = specs.load_spec

    def fake_spec(name):
        spec = real("vllm")
        if name == "nometrics":
            return spec.model_copy(update={"metrics_path": None})
        return spec.model_copy(update={"metrics": {"running": ["custom_running"]}})

    monkeypatch.setattr(specs, "load_spec", fake_spec)
    scraper = make_samplers(Server(base_url="http://127.0.0.1:9", engine="vllm", adapter="x"))[2]
    assert scraper.mapping == {"running": ["custom_running"]}
    scraper = make_samplers(Server(base_url="http://127.0.0.1:9", engine="nometrics", adapter="x"))[2]
    scraper.start()
    scraper.stop()
    assert scraper.summary() == {
        "available": False, "reason": "engine 'nometrics' serves no Prometheus metrics (its spec has no metrics_path)"
    }
    # An engine without a spec falls back to the built-in names.
    monkeypatch.setattr(specs, "load_spec", lambda name: (_ for _ in ()).throw(specs.SpecError("unknown")))
    scraper = make_samplers(Server(base_url="http://127.0.0.1:9", engine="sglang", adapter="x"))[2]
    assert scraper.mapping["running"] == ["sglang:num_running_reqs"] and scraper.url.endswith("/metrics")
