"""Adapter: the wire format of one engine API, apart from any transport.

Pure functions only: build a request body, parse one stream event. No I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from servebench.records import StreamEvent


@dataclass(slots=True, frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


class Adapter(Protocol):
    name: str  # key in ADAPTERS
    default_path: str
    forces_length: bool  # can the engine be made to emit exactly max_tokens over HTTP?

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        """The streaming request for one prompt, asking for exactly `max_tokens` where possible."""
        ...

    def parse(self, payload: bytes, state: dict[str, Any]) -> StreamEvent | None:
        """Parse one SSE data payload. `state` is a per-request dict the adapter may use
        (e.g. SGLang's cumulative counts). `[DONE]` is a final event (done=True), so a
        stream cut before it is detected as truncated; return None only for payloads that
        carry nothing. Raise ValueError on a malformed payload."""
        ...
