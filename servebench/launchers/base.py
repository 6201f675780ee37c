"""Launcher: start a server, wait until it truly serves, and always tear it down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class LaunchError(RuntimeError):
    """The server could not be started or never became ready (message is one line)."""


@dataclass(slots=True)
class LaunchRequest:
    engine: str  # key of a spec in backends/ (or a user spec file)
    model: str  # model dir, preset-resolved dir, or hub id
    gpus: list[int] | None = None
    port: int | None = None  # host port; None: pick a free one
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float | None = None  # None: sized for the model (launchers.timeouts)
    run_dir: Path | None = None  # server.log goes here
    options: dict[str, Any] = field(default_factory=dict)  # launcher-specific (instance type, ...)


@dataclass(slots=True)
class Server:
    base_url: str  # e.g. http://127.0.0.1:8123 ; "sagemaker://<endpoint>" for SageMaker
    engine: str
    adapter: str  # key in servebench.adapters.ADAPTERS
    time_to_ready_s: float | None = None
    pid: int | None = None  # process launcher: group leader, for telemetry of the tree
    info: dict[str, Any] = field(default_factory=dict)  # command line, container id, ... (no secrets)


class Launcher(Protocol):
    name: str

    def start(self, req: LaunchRequest) -> Server:
        """Start and wait until ready. On any failure, tear down what was started and raise
        LaunchError with a one-line message (including the last log lines)."""
        ...

    def stop(self) -> None:
        """Tear down everything start() created. Idempotent; safe after a failed start."""
        ...
