"""Launchers by name. Each class takes only keyword-only, injectable dependencies (a docker
client, boto3 clients), so `LAUNCHERS[name]()` is the production object and tests pass fakes.
Heavy SDKs (docker, boto3) are imported on use, not here."""

from __future__ import annotations

from servebench.launchers.base import Launcher, LaunchError, LaunchRequest, Server
from servebench.launchers.docker import DockerLauncher
from servebench.launchers.external import ExternalLauncher
from servebench.launchers.process import ProcessLauncher
from servebench.launchers.sagemaker import SageMakerLauncher

LAUNCHERS: dict[str, type] = {
    "process": ProcessLauncher,
    "docker": DockerLauncher,
    "sagemaker": SageMakerLauncher,
    "external": ExternalLauncher,
}


def get_launcher(name: str, **deps) -> Launcher:
    """A launcher by name, or a one-line LaunchError listing the known ones."""
    if name not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {name!r} (known: {', '.join(LAUNCHERS)})")
    return LAUNCHERS[name](**deps)


__all__ = ["LAUNCHERS", "LaunchError", "LaunchRequest", "Launcher", "Server", "get_launcher"]
