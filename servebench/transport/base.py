"""Transport: the seam between the load loop and a server, beside adapters/base.py.

An adapter says what a request and a stream event look like; a transport moves the request's
bytes and stamps what comes back, without parsing it (decode does that after the run). All
set-up (serializing, opening connections, starting threads) happens before t0, so the
measured part of `send` is the wire and the server.
"""

from __future__ import annotations

from typing import Protocol

from servebench.adapters.base import Request
from servebench.records import RequestRecord


class Transport(Protocol):
    """Built as `cls(base_url, *, timeout_s=...)` (see TRANSPORTS in this package)."""

    name: str  # key in servebench.transport.TRANSPORTS
    connect_ns: list[int]  # set-up time of every connection opened; empty where none is visible

    def encode(self, req: Request, request_id: int | None = None) -> bytes:
        """The wire form of one request, made before t0 (never in the hot path)."""
        ...

    async def prepare(self, n: int, parallel: int = 64) -> None:
        """Open what `n` requests in flight need (connections, threads) before t0."""
        ...

    async def send(self, wire: bytes, rec: RequestRecord) -> None:
        """Send one encoded request and stamp rec (sent, first byte, raw chunks, end, status).
        Server and network faults go to rec.error; it never raises for them."""
        ...

    async def close(self) -> None:
        """Release every connection and thread; safe to call twice."""
        ...
