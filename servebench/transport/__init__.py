"""Transports move prepared requests and record raw timestamps; formats live in adapters."""

from __future__ import annotations

import importlib

from servebench.transport.base import Transport
from servebench.transport.http import HttpTransport, TransportError

# name -> "module:Class"; imported on use so boto3 is only loaded for SageMaker runs.
TRANSPORTS: dict[str, str] = {
    "http": "servebench.transport.http:HttpTransport",
    "sagemaker": "servebench.transport.sagemaker:SageMakerTransport",
}


def transport_class(name: str) -> type[Transport]:
    mod, attr = TRANSPORTS[name].split(":")
    return getattr(importlib.import_module(mod), attr)


__all__ = ["HttpTransport", "Transport", "TransportError", "TRANSPORTS", "transport_class"]
