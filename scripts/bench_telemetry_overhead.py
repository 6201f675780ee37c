"""How much do the telemetry threads disturb the load generator's timestamps?

The samplers run as threads in the load generator's process, so any Python work they do
holds the GIL that the event loop needs to stamp token arrivals. This measures the cost of
one sample of each kind, and the lateness of a 1 ms asyncio timer (a stand-in for a token
arrival) with and without the samplers running against a local fake server.

    python3 scripts/bench_telemetry_overhead.py [seconds]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from servebench.telemetry.process import ProcessSampler
from servebench.telemetry.prom import ENGINE_METRICS, PromScraper, parse_metrics


def big_vllm_page() -> bytes:
    """A /metrics page the size of a busy vLLM's: ~20 histograms x 30 buckets x 2 engines."""
    r = CollectorRegistry()
    lab = ["model_name", "engine"]
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        g = Gauge(name, "x", lab, registry=r)
        for e in "01":
            g.labels("m", e).set(3)
    for i in range(20):
        h = Histogram(f"vllm:hist_{i}_seconds", "x", lab, buckets=[0.001 * 1.5**k for k in range(30)], registry=r)
        for e in "01":
            h.labels("m", e).observe(0.1)
    return generate_latest(r)


def per_sample_costs(page: bytes, tree_pid: int) -> dict[str, float]:
    text = page.decode()
    n = 200
    t = time.thread_time()
    for _ in range(n):
        parse_metrics(text, ENGINE_METRICS["vllm"])
    parse_ms = (time.thread_time() - t) / n * 1e3
    from prometheus_client.parser import text_string_to_metric_families

    t = time.thread_time()
    for _ in range(20):
        list(text_string_to_metric_families(text))
    full_ms = (time.thread_time() - t) / 20 * 1e3
    s = ProcessSampler(tree_pid, interval_s=1)
    s.ensure_open()
    t = time.thread_time()
    for _ in range(n):
        s._sample(0)
    proc_ms = (time.thread_time() - t) / n * 1e3
    return {"parse_ms": parse_ms, "full_parse_ms": full_ms, "process_ms": proc_ms, "page_lines": text.count("\n")}


async def timer_lateness(seconds: float) -> np.ndarray:
    late = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter_ns()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter_ns() - t) / 1e6 - 1.0)
    return np.array(late)


def main(seconds: float = 3.0) -> None:
    page = big_vllm_page()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    # A server-like tree: a parent with 4 idle children.
    tree = subprocess.Popen([sys.executable, "-c",
        "import subprocess,sys,time\nps=[subprocess.Popen([sys.executable,'-c','import time;time.sleep(60)']) for _ in range(4)]\ntime.sleep(60)"])  # fmt: skip
    try:
        time.sleep(0.5)
        costs = per_sample_costs(page, tree.pid)
        base = asyncio.run(timer_lateness(seconds))
        samplers = [ProcessSampler(tree.pid, 0.1), PromScraper(f"http://127.0.0.1:{srv.server_address[1]}", "vllm", 1.0)]
        for s in samplers:
            s.start()
        loaded = asyncio.run(timer_lateness(seconds))
        for s in samplers:
            s.stop()
    finally:
        tree.kill()
        srv.shutdown()
    print(f"/metrics page: {costs['page_lines']} lines, {len(page)} bytes")
    print(f"per-sample thread CPU: /metrics parse {costs['parse_ms']:.2f} ms (whole page unfiltered: "
          f"{costs['full_parse_ms']:.1f} ms), process tree (5 procs) {costs['process_ms']:.2f} ms")  # fmt: skip
    for name, x in (("no samplers", base), ("process 0.1 s + /metrics 1 s", loaded)):
        p50, p99, p999, mx = np.percentile(x, [50, 99, 99.9, 100])
        print(f"1 ms timer lateness, {name:30s}: p50 {p50:.3f}  p99 {p99:.3f}  p99.9 {p999:.3f}  max {mx:.3f} ms (n={len(x)})")  # fmt: skip


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
