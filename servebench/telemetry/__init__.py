"""Telemetry beside the load: GPUs (NVML), the server's process tree, the server's /metrics.

The orchestrator's side of the contract:

    samplers = make_samplers(server, gpus)
    for s in samplers: s.start()                 # before warm-up
    for s in samplers: s.sample_now()            # right before the first measured send (optional)
    ... load ...
    for s in samplers: s.sample_now()            # right after the last response (optional)
    for s in samplers: s.stop()
    for s in samplers: s.mark_window(t_first_send_ns, t_last_end_ns)   # before or after stop()
    files = [f for s in samplers for f in s.write(run_dir)]
    telemetry = finalize({s.name: s.summary() for s in samplers}, output_tokens)
    host.update(gpu_host_info(samplers))         # run.json: gpus, driver and CUDA versions

sample_now() at the marks puts a sample within microseconds of each edge, so energy and
server token counters are read at the window edges instead of up to one period away.
Nothing here raises into the run: every failure becomes {"available": False, "reason": ...}.
"""

from __future__ import annotations

from typing import Any, Mapping

from servebench.telemetry.base import Sampler
from servebench.telemetry.nvml import NvmlSampler
from servebench.telemetry.process import ProcessSampler
from servebench.telemetry.prom import ENGINE_METRICS, PromScraper, parse_metrics
from servebench.telemetry.summary import finalize

__all__ = [
    "ENGINE_METRICS", "NvmlSampler", "ProcessSampler", "PromScraper", "Sampler",
    "finalize", "gpu_host_info", "make_samplers", "parse_metrics",
]  # fmt: skip


def _spec_metrics(engine: str) -> tuple[dict[str, list[str]] | None, str | None]:
    """The engine spec's /metrics route and names; the built-in defaults if no spec."""
    try:
        from servebench.engines.specs import load_spec

        spec = load_spec(engine)
    except Exception:
        return None, "/metrics"
    return (dict(spec.metrics) or None), spec.metrics_path


def make_samplers(
    server: Any,
    gpus: list[int] | None = None,
    interval_s: float = 0.1,
    nvml: Any = None,
    metrics_interval_s: float = 1.0,
    metric_map: Mapping[str, list[str]] | None = None,
) -> list[Sampler]:
    """One sampler per source, always all three, so the summary says why one is missing.

    `server`: servebench.launchers.base.Server. /metrics names: `metric_map`, else the
    engine spec's `metrics`, else ENGINE_METRICS[engine], else recognised from the page.
    """
    spec_map, path = _spec_metrics(server.engine)
    scraper = PromScraper(
        server.base_url, server.engine, interval_s=metrics_interval_s, metric_map=metric_map or spec_map, path=path
    )
    return [
        NvmlSampler(gpus=gpus, interval_s=interval_s, nvml=nvml, base_url=server.base_url),
        ProcessSampler(server.pid, interval_s=interval_s),
        scraper,
    ]


def gpu_host_info(samplers: list[Sampler]) -> dict[str, Any]:
    """GPU facts for run.json's host section (see NvmlSampler.host_info)."""
    for s in samplers:
        if isinstance(s, NvmlSampler):
            return s.host_info()
    return {"gpus": [], "gpus_unavailable": "no GPU sampler"}
