"""Post-run stream decoding: raw (recv_ns, body bytes) reads -> per-token timestamps and counts.

Definitions (docs/metrics.md builds on these):
- A token event is a stream event that carries at least one new output token (what counts as
  one is the adapter's call, documented in each adapter module).
- Its timestamp is the recv_ns of the read that COMPLETED the event (the read holding its
  terminating blank line), i.e. the earliest moment a client could have acted on it. An event
  split across reads is stamped when its last piece arrived; several events completed by one
  read share that read's stamp.
- token_counts[i] is how many tokens event i carried (1 unless the engine batches them).
- server_input_tokens / server_output_tokens / finish_reason are the engine's own figures, the
  last value it reported (OpenAI usage chunk, TGI details, LightLLM / SGLang running counts).
  sum(token_counts) can differ from server_output_tokens where a stream's chunks do not say
  how many tokens they hold (OpenAI text chunks); the server's figure is the total to trust.

rec.error (one line) is set for: a non-2xx status (message from the JSON error body), a
malformed event, an error event in the stream, and a stream that ended before the engine's
final event (truncated). An error already set by the transport is kept; decoding still fills
what the received bytes allow. Events after the final one are ignored.

Complete vs truncated: a stream is complete at the engine's end marker (`[DONE]`, TGI's
details event, ...) OR when the body ended cleanly after an event holding a finish_reason.
OpenAI-compatible servers differ on what follows the finish chunk (vLLM: a usage chunk, then
`[DONE]`; `transformers serve`: nothing, with usage inside the finish chunk), and the finish
chunk is the engine's own word that generation ended. A connection cut mid-body is caught by
the transport (rec.error), not here; an event left open at the end is still "truncated".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from servebench.adapters._json import body_error_text, one_line
from servebench.adapters.base import Adapter
from servebench.adapters.sse import ErrorPayload, OversizedStream, SSEDecoder
from servebench.records import RequestRecord, counts_array, ns_array


def decode_records(adapter: Adapter, records: Iterable[RequestRecord]) -> None:
    """Decode every record not decoded yet (a load worker decodes its own and drops the raw
    bytes before sending records back, so the parent never re-decodes those)."""
    for rec in records:
        if not rec.decoded:
            decode_record(adapter, rec)


def released(rec: RequestRecord) -> bool:
    """Sent, failed trying (no connection), or holding a response. A request the schedule
    never released (--duration ended, Ctrl-C) has none: it is `not_released`, never a failure."""
    return bool(rec.sent_ns or rec.error or rec.status or rec.chunks)


def decode_record(adapter: Adapter, rec: RequestRecord) -> None:
    # decoding again (e.g. a re-report of stored raw records) must give the same result
    rec.token_ns = ns_array()
    rec.token_counts = counts_array()
    rec.tok = None
    rec.server_input_tokens = None
    rec.server_output_tokens = None
    rec.finish_reason = None
    if not released(rec):  # no response is expected of it: "no HTTP response" would fail it
        rec.decoded = True
        return
    try:
        err = _decode(adapter, rec)
    except Exception as e:  # noqa: BLE001 - one stream's bytes must never stop the others' decoding
        rec.token_ns, rec.token_counts = ns_array(), counts_array()
        err = f"undecodable stream ({type(e).__name__}: {e})"
    if err is not None and rec.error is None:
        rec.error = one_line(err)
    rec.decoded = True


def _decode(adapter: Adapter, rec: RequestRecord) -> str | None:
    if not 200 <= rec.status < 300:
        if rec.status == 0:
            return "no HTTP response"
        return f"HTTP {rec.status}: {body_error(b''.join(c for _, c in rec.chunks))}"
    dec = SSEDecoder()
    state: dict[str, Any] = {}
    events = 0
    try:
        for recv_ns, data in rec.chunks:
            for payload in dec.feed(data):
                events += 1
                out = _apply(adapter, payload, recv_ns, state, rec)
                if out is not None:
                    return None if out is True else out
    except _Malformed as e:
        return e.message
    except OversizedStream as e:  # the transport caps these too; records made elsewhere may not be
        return str(e)
    # the connection closed: an event still open was never terminated by the server
    last_ns = rec.chunks[-1][0] if rec.chunks else 0
    try:
        rest = dec.close()
    except OversizedStream as e:
        return str(e)
    for payload in rest:
        events += 1
        try:
            out = _apply(adapter, payload, last_ns, state, rec)
        except _Malformed:
            return f"truncated: stream ended inside event {events}"
        if out is not None:
            return None if out is True else out
    if events == 0:
        body = b"".join(c for _, c in rec.chunks)
        if not body:
            return "empty response body"
        return f"no SSE events in the response body: {body[:80].decode('utf-8', 'replace')}"
    if rec.finish_reason is not None:
        return None  # ended cleanly after the finish event (no [DONE]): complete
    return f"truncated: stream ended after {events} events without the final one"


class _Malformed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_MAX_EVENT_TOKENS = 2**31 - 1


def _apply(adapter: Adapter, payload: bytes, recv_ns: int, state: dict[str, Any], rec: RequestRecord):
    """Fold one payload into rec. Returns None to go on, True at the final event, or an error."""
    if type(payload) is ErrorPayload:
        return f"error event in stream: {_payload_error(payload)}"
    try:
        ev = adapter.parse(payload, state)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested deeper than Python's stack
        raise _Malformed(f"malformed event ({e}): {payload[:80]!r}") from None
    if ev is None:
        return None
    if ev.error is not None:
        return f"error event in stream: {ev.error}"
    if ev.tokens > _MAX_EVENT_TOKENS:  # a running count's jump: token_counts (and requests.parquet) hold int32
        return f"malformed event (carries {ev.tokens} tokens, more than a count holds): {payload[:80]!r}"
    if ev.tokens:
        rec.token_ns.append(recv_ns)
        rec.token_counts.append(ev.tokens)
    if ev.prompt_tokens is not None:
        rec.server_input_tokens = ev.prompt_tokens
    if ev.output_tokens is not None:
        rec.server_output_tokens = ev.output_tokens
    if ev.finish_reason is not None:
        rec.finish_reason = ev.finish_reason
    return True if ev.done else None


def _payload_error(payload: bytes) -> str:
    return body_error_text(payload) or payload.decode("utf-8", "replace") or "(no message)"


def body_error(body: bytes) -> str:
    """One line describing a non-2xx response body: the JSON error message when there is one."""
    return one_line(body_error_text(body, json_string=True) or body.decode("utf-8", "replace").strip() or "(empty body)")


def reply_text(adapter: Adapter, rec: RequestRecord) -> str:
    """The text a response carried, its events' text in order (a multi-turn session sends it
    back as the assistant's turn). Empty for a failed request or one whose events do not parse."""
    if not rec.ok or not rec.chunks:
        return ""
    dec = SSEDecoder()
    state: dict[str, Any] = {}
    parts: list[str] = []
    try:
        for _, data in rec.chunks:
            for payload in dec.feed(data):
                if type(payload) is ErrorPayload:
                    return "".join(parts)
                ev = adapter.parse(payload, state)
                if ev is not None:
                    parts.append(ev.text)
                    if ev.done:
                        return "".join(parts)
    except (ValueError, RecursionError, OversizedStream):
        pass
    return "".join(parts)
