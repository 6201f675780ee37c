"""Telemetry beside the load: GPUs (NVML), the server's process tree, the server's /metrics.

The orchestrator's side of the contract:

    samplers = make_samplers(server, gpus)
    for s in samplers: s.start()                 # before warm-up
    for s in samplers: s.sample_now()            # at the first send (optional, sharper edges)
    ... load ...
    for s in samplers: s.sample_now()            # after the last response (optional)
    for s in samplers: s.mark_window(t_first_send_ns, t_last_end_ns); s.stop()
    files = [f for s in samplers for f in s.write(run_dir)]
    telemetry = finalize({s.name: s.summary() for s in samplers}, output_tokens)
    run_json["gpus"] = gpu_host_info(samplers)

Nothing here raises into the run: every failure becomes {"available": False, "reason": ...}.
"""

from __future__ import annotations

from typing import Any, Mapping

from servebench.telemetry.base import Sampler
from servebench.telemetry.nvml import NvmlSampler
from servebench.telemetry.process import ProcessSampler
from servebench.telemetry.prom import ENGINE_METRICS, PromScraper, parse_metrics
from servebench.telemetry.summary import finalize, unavailable

__all__ = [
    "ENGINE_METRICS", "NvmlSampler", "ProcessSampler", "PromScraper", "Sampler",
    "finalize", "gpu_host_info", "make_samplers", "parse_metrics",
]  # fmt: skip


def make_samplers(
    server: Any,
    gpus: list[int] | None = None,
    interval_s: float = 0.1,
    nvml: Any = None,
    metrics_interval_s: float = 1.0,
    metric_map: Mapping[str, list[str]] | None = None,
) -> list[Sampler]:
    """One sampler per source, always all three, so the summary says why one is missing.

    `server`: servebench.launchers.base.Server. `metric_map`: the engine spec's /metrics
    names ({common name: [series, ...]}) when it has them; else ENGINE_METRICS[engine].
    """
    return [
        NvmlSampler(gpus=gpus, interval_s=interval_s, nvml=nvml, base_url=server.base_url),
        ProcessSampler(server.pid, interval_s=interval_s),
        PromScraper(server.base_url, server.engine, interval_s=metrics_interval_s, metric_map=metric_map),
    ]


def gpu_host_info(samplers: list[Sampler]) -> dict[str, Any]:
    """GPU facts (driver, CUDA, names, UUIDs) for run.json, from the GPU sampler."""
    for s in samplers:
        if isinstance(s, NvmlSampler):
            return s.host_info()
    return unavailable("no GPU sampler")
