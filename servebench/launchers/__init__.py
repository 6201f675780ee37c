"""Launchers by name. Each class is built with keyword-only, injectable dependencies (a docker
client, boto3 clients) and implements servebench.launchers.base.Launcher."""

from __future__ import annotations

from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.external import ExternalLauncher
from servebench.launchers.process import ProcessLauncher

LAUNCHERS: dict[str, type] = {
    "process": ProcessLauncher,
    "external": ExternalLauncher,
}

__all__ = ["LAUNCHERS", "LaunchError", "LaunchRequest", "Server"]
