"""Telemetry: samplers that run beside the load, on the same perf_counter_ns clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Sampler(Protocol):
    name: str  # "gpu", "process", "server_metrics"

    def start(self) -> None: ...

    def mark_window(self, start_ns: int, end_ns: int) -> None:
        """The measured load window, for summaries (energy by counter difference, means)."""
        ...

    def stop(self) -> None: ...

    def write(self, run_dir: Path) -> list[str]:
        """Write samples (parquet) into run_dir; return the file names written."""
        ...

    def summary(self) -> dict[str, Any]:
        """JSON-able summary; {"available": False, "reason": "..."} when unavailable."""
        ...
