"""Scrape the server's Prometheus /metrics and normalise each engine's names.

Only a handful of series matter here (batch size, queue depth, KV-cache use, token
counters), so each scrape is cut down to those lines before parsing: a vLLM /metrics is
thousands of histogram lines, and parsing them in Python would hold the GIL the load
generator needs for its timestamps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping

from servebench.errors import described
from servebench.telemetry.periodic import PeriodicSampler, Unavailable, write_rows
from servebench.telemetry.summary import bracket_delta, finite, headline, mean_in, peak_in, unavailable

# Common name -> the engine's series, first present wins (older names last). Histogram
# _sum series count tokens of finished requests only; per-step counters also count tokens of
# requests still running.
ENGINE_METRICS: dict[str, dict[str, list[str]]] = {
    "vllm": {
        "running": ["vllm:num_requests_running"],
        "waiting": ["vllm:num_requests_waiting"],
        "kv_cache_usage": ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        "prompt_tokens_total": ["vllm:prompt_tokens_total"],
        "generation_tokens_total": ["vllm:generation_tokens_total"],
        # prompt tokens looked up in / found in the prefix cache (vLLM v1)
        "prefix_cache_queries_total": ["vllm:prefix_cache_queries_total"],
        "prefix_cache_hits_total": ["vllm:prefix_cache_hits_total"],
    },
    "tgi": {
        "running": ["tgi_batch_current_size"],
        "waiting": ["tgi_queue_size"],
        "batch_tokens": ["tgi_batch_current_max_tokens"],
        "prompt_tokens_total": ["tgi_request_input_length_sum"],
        "generation_tokens_total": ["tgi_request_generated_tokens_sum"],
    },
    "sglang": {
        "running": ["sglang:num_running_reqs"],
        "waiting": ["sglang:num_queue_reqs"],
        "kv_cache_usage": ["sglang:token_usage"],
        "batch_tokens": ["sglang:num_used_tokens"],
        "prompt_tokens_total": ["sglang:prompt_tokens_total"],
        "generation_tokens_total": ["sglang:generation_tokens_total"],
    },
    "lightllm": {
        "running": ["lightllm_batch_current_size"],
        "waiting": ["lightllm_queue_size"],
        "prompt_tokens_total": ["lightllm_request_input_length_sum"],
        "generation_tokens_total": ["lightllm_request_generated_tokens_sum"],
    },
}
GAUGES = ("running", "waiting", "kv_cache_usage", "batch_tokens")
COUNTERS = ("prompt_tokens_total", "generation_tokens_total", "prefix_cache_queries_total", "prefix_cache_hits_total")
COMMON = GAUGES + COUNTERS
# Several series of one name (data-parallel engines, per-rank labels) are summed, except a
# usage fraction: summing fractions is meaningless, so report the fullest engine.
_MAX_AGG = {"kv_cache_usage"}
COLUMNS = ("t_ns", "t_send_ns", "t_recv_ns", "status", *COMMON)


def _line_filter(names: set[str]) -> re.Pattern[str]:
    alt = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    # Series lines only: `name{labels} value [timestamp]` or `name value`; comments dropped.
    return re.compile(rf"^(?:{alt})(?:\{{[^\n]*\}})?[ \t][^\n]*$", re.M)


def parse_metrics(text: str, mapping: Mapping[str, list[str]]) -> tuple[dict[str, float], dict[str, str]]:
    """Exposition text -> ({common name: value}, {common name: series used})."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {n for cands in mapping.values() for n in cands}
    kept = "\n".join(m.group(0) for m in _line_filter(wanted).finditer(text))
    by_name: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(kept + "\n"):
        for s in fam.samples:
            by_name.setdefault(s.name, []).append(float(s.value))
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for common, cands in mapping.items():
        for name in cands:
            if name in by_name:
                vs = by_name[name]
                values[common] = max(vs) if common in _MAX_AGG else sum(vs)
                sources[common] = name
                break
    return values, sources


def detect_engine(text: str) -> str | None:
    """Which engine's series a /metrics text carries (for endpoints of unknown engine)."""
    for engine, mapping in ENGINE_METRICS.items():
        if any(name in text for name in mapping["running"]):
            return engine
    return None


class PromScraper(PeriodicSampler):
    name = "server_metrics"

    def __init__(
        self,
        base_url: str,
        engine: str | None = None,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        metric_map: Mapping[str, list[str]] | None = None,
        path: str | None = "/metrics",
    ) -> None:
        super().__init__(interval_s)
        self.url = base_url.rstrip("/") + (path or "")
        self._no_route = path is None  # the engine spec says it has no /metrics
        self.engine = engine
        self.timeout_s = timeout_s
        self.mapping = dict(metric_map) if metric_map else ENGINE_METRICS.get(engine or "")
        self.sources: dict[str, str] = {}
        self.rows: list[tuple] = []
        self.failures = 0
        self.last_error: str | None = None

    def _open(self) -> None:
        if self._no_route:
            raise Unavailable(f"engine {self.engine!r} serves no Prometheus metrics (its spec has no metrics_path)")
        if not self.url.startswith(("http://", "https://")):
            raise Unavailable(f"no HTTP /metrics for {self.url.rsplit('/', 1)[0]}")
        import httpx

        # No proxy from the environment: scrape the same server the load goes to directly.
        self._client = httpx.Client(timeout=self.timeout_s, trust_env=False)

    def _close(self) -> None:
        self._client.close()

    def scrape_now(self) -> None:
        """Alias of sample_now(): call at the window marks for exact counter brackets."""
        self.sample_now()

    def _sample(self, now_ns: int) -> None:
        import httpx

        t_send = time.perf_counter_ns()
        try:
            resp = self._client.get(self.url)
            body, status = resp.text, resp.status_code
        except httpx.HTTPError as e:
            body, status = "", 0
            self.last_error = described(e)
        t_recv = time.perf_counter_ns()
        if status == 404 and not self.rows:
            hint = " (sglang needs --enable-metrics)" if self.engine == "sglang" else ""
            raise RuntimeError(f"GET {self.url} -> 404{hint}")
        if status != 200:
            self.failures += 1
            if status:
                self.last_error = f"GET {self.url} -> {status}"
            self.rows.append((t_send + (t_recv - t_send) // 2, t_send, t_recv, status, *(None for _ in COMMON)))
            return
        if self.mapping is None:
            self.engine = detect_engine(body)
            if self.engine is None:
                raise RuntimeError(f"{self.url} serves no series of a known engine")
            self.mapping = ENGINE_METRICS[self.engine]
        values, sources = parse_metrics(body, self.mapping)
        self.sources.update(sources)
        # The server rendered the page somewhere between send and receive: stamp the middle.
        row = (t_send + (t_recv - t_send) // 2, t_send, t_recv, status, *(values.get(c) for c in COMMON))
        self.rows.append(row)

    def _has_data(self) -> bool:
        return any(r[3] == 200 for r in self.rows)

    def write(self, run_dir: Path) -> list[str]:
        if not self.rows:
            return []
        path = Path(run_dir) / "server_metrics.parquet"
        write_rows(self.rows, COLUMNS, path)
        return [path.name]

    def summary(self) -> dict[str, Any]:
        try:
            out = self._unavailable_summary()
            if out is not None:
                if self.last_error and self.reason is None:
                    out["reason"] = f"no successful scrape: {self.last_error}"
                return out
            return self._summarize()
        except Exception as e:
            return unavailable(f"summary failed: {described(e)}")

    def _summarize(self) -> dict[str, Any]:
        col = {c: i for i, c in enumerate(COLUMNS)}
        t = [r[0] for r in self.rows]
        w = self.window
        out: dict[str, Any] = {
            "available": True,
            "url": self.url,
            "engine": self.engine,
            "interval_s": self.interval_s,
            "scrapes": sum(1 for r in self.rows if r[3] == 200),
            "failed_scrapes": self.failures,
            "sources": dict(self.sources),
        }
        for g in GAUGES:
            vs = [r[col[g]] for r in self.rows]
            out[g] = None if g not in self.sources else {
                "mean": finite(mean_in(t, vs, w), 4), "peak": finite(peak_in(t, vs, w), 4),
            }  # fmt: skip
        for c in COUNTERS:
            key = c.removesuffix("_total")
            vs = [r[col[c]] for r in self.rows]
            d = bracket_delta([r[1] for r in self.rows], [r[2] for r in self.rows], vs, w) if w else None
            if d is not None:
                d = {k: finite(v, 4) for k, v in d.items()}
            out[key] = d
        def pick(key: str, field: str) -> float | None:
            return (out.get(key) or {}).get(field)

        # over the measured window, beside a trace's ideal reuse (docs/workloads.md); None: not exposed
        queries, hits = pick("prefix_cache_queries", "delta"), pick("prefix_cache_hits", "delta")
        out["prefix_cache_hit_rate"] = hits / queries if queries and hits is not None else None

        kv = pick("kv_cache_usage", "peak")
        out["headline"] = headline([
            ("running mean", pick("running", "mean"), ".1f"), ("peak", pick("running", "peak"), ".0f"),
            ("waiting peak", pick("waiting", "peak"), ".0f"), ("KV-cache peak %", None if kv is None else kv * 100, ".0f"),
            ("server-counted output tokens", pick("generation_tokens", "delta"), ".0f"),
        ])  # fmt: skip
        if self.last_error:
            out["last_error"] = self.last_error
        if self.reason:
            out["stopped_early"] = self.reason
        return out
