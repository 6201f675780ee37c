"""Request-field probe: one real request before the load, to find fields the server rejects.

servebench adds fields a plain OpenAI-compatible server may not know (`ignore_eos`,
`stream_options`, vLLM's `return_token_ids`, ...). A strict server answers 400/422 naming the
field (`transformers serve`: `Unexpected fields in the request: {'ignore_eos'}`; FastAPI:
`body.ignore_eos: Extra inputs are not permitted`; OpenAI: `Unrecognized request argument
supplied: ignore_eos`). Every request of the load would fail the same way, so the probe sends
one request first and, when the error names fields servebench added, retries ONCE without them.
The run then uses the reduced request and records what was dropped and what that changes.

`negotiate` is pure apart from the injected `send`; `before_load` is the one call the run makes.
The probe asks for 2 tokens of "Hello"; the server's own counts of it are stored beside the
outcome (run.json server.info.request_probe: prompt_tokens, output_tokens), so a check of the
server's token counters against the run's records can add them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from servebench.adapters._json import body_error_text, loads, one_line
from servebench.adapters.base import Request

PROBE_PROMPT = "Hello"
PROBE_TOKENS = 2

# What a request needs to be a request at all: never dropped, whatever an error says.
ESSENTIAL = frozenset({"model", "prompt", "messages", "stream", "max_tokens", "inputs", "text", "parameters",
                       "sampling_params"})

# What dropping a field changes in the numbers (recorded in run.json and shown as a warning).
MEANING = {
    "ignore_eos": "output length no longer forced: the server may stop at EOS before max_tokens; "
                  "the achieved length is reported and a shortfall flagged",
    "stream_options": "no usage chunk requested: output tokens are client-counted (one per streamed chunk with text)",
    "return_token_ids": "tokens per chunk no longer exact: a chunk holding several tokens counts as one",
    "max_completion_tokens": "max_tokens alone bounds the output",
    "temperature": "the server's default sampling (not greedy)",
}

Send = Callable[[Request], tuple[int, bytes]]


@dataclass(slots=True)
class Negotiation:
    extra: dict[str, Any]  # what the load sends as the adapter's `extra` (dropped fields set to None)
    dropped: list[str] = field(default_factory=list)
    rejected_status: int | None = None  # the status of the first answer, when it rejected fields
    rejected_message: str | None = None
    status: int | None = None  # the status of the last probe answer (None: no answer)
    error: str | None = None  # why the probe could not get a 2xx, if it could not
    body: bytes = b""  # the last answer's body (not stored: its token counts are, by before_load)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        del out["body"]
        out["meaning"] = {f: MEANING.get(f, "server default for this field") for f in self.dropped}
        return out

    def warning(self) -> str | None:
        if not self.dropped:
            return None
        means = "; ".join(f"{f}: {MEANING.get(f, 'server default')}" for f in self.dropped)
        return (f"server rejected request field(s) {', '.join(self.dropped)} (HTTP {self.rejected_status}); "
                f"the load ran without them ({means})")


def message_of(body: bytes) -> str:
    """The error text of a rejection body: JSON error fields flattened, else the raw text."""
    return body_error_text(body) or body.decode("utf-8", "replace")


def named_fields(message: str, sent: dict[str, Any]) -> list[str]:
    """Top-level fields of `sent` (not essential) that the error message names as whole words."""
    out = []
    for name in sent:
        if name in ESSENTIAL:
            continue
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message):
            out.append(name)
    return out


def negotiate(send: Send, build: Callable[[dict[str, Any]], Request], extra: dict[str, Any] | None) -> Negotiation:
    """Send the probe built with `extra`; on a 400/422 naming fields of the body, retry once with
    them removed. Transport failures (send raising OSError/RuntimeError) end the probe quietly:
    the load then records its own per-request errors."""
    extra = dict(extra or {})
    req = build(extra)
    try:
        status, body = send(req)
    except (OSError, RuntimeError) as e:
        return Negotiation(extra=extra, error=one_line(str(e) or type(e).__name__))
    if 200 <= status < 300:
        return Negotiation(extra=extra, status=status, body=body)
    message = one_line(message_of(body))
    if status not in (400, 422):
        return Negotiation(extra=extra, status=status, error=f"HTTP {status}: {message}")
    try:
        sent = loads(req.body)
    except ValueError:
        sent = {}
    fields = named_fields(message, sent if isinstance(sent, dict) else {})
    if not fields:
        return Negotiation(extra=extra, status=status, error=f"HTTP {status}: {message}")
    reduced = {**extra, **{f: None for f in fields}}  # None removes the field (adapters' merged())
    out = Negotiation(extra=reduced, dropped=fields, rejected_status=status, rejected_message=message)
    try:
        out.status, body = send(build(reduced))
    except (OSError, RuntimeError) as e:
        out.error = one_line(str(e) or type(e).__name__)
        return out
    if not 200 <= out.status < 300:
        out.error = f"HTTP {out.status}: {one_line(message_of(body))}"
    else:
        out.body = body
    return out


PROBE_REQUEST_ID = "servebench-probe"


def http_send(base_url: str, timeout_s: float = 60.0, client: Any = None) -> Send:
    """A Send that reads the whole (short) streamed answer within `timeout_s` in all: connect,
    head and body (servebench's own transport, so the size caps hold too). httpx when a
    client is given (it bounds each read, not the whole: a slow head or a trickle goes on)."""
    if client is None:
        return lambda req: _send_by_deadline(base_url, req, timeout_s)
    import httpx

    def send(req: Request) -> tuple[int, bytes]:
        c = client or httpx.Client()
        try:
            # its own id, so a server's log never mistakes the probe for measured request 0
            headers = {**dict(req.headers), "x-request-id": PROBE_REQUEST_ID}
            r = c.request(req.method, base_url.rstrip("/") + req.path, content=req.body,
                          headers=headers, timeout=timeout_s)
            return r.status_code, r.read()
        except httpx.HTTPError as e:
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        finally:
            if client is None:
                c.close()

    return send


def _send_by_deadline(base_url: str, req: Request, timeout_s: float) -> tuple[int, bytes]:
    """One request on a loop of its own; RuntimeError (one line) when it did not end in time."""
    import asyncio

    from servebench.records import RequestRecord
    from servebench.transport.http import HttpTransport

    async def one() -> RequestRecord:
        tr = HttpTransport(base_url, timeout_s=timeout_s)
        rec = RequestRecord(index=-1)
        # the transport bounds the response; this bounds the connect too. Not wait_for: on
        # Python 3.11 it returns the result of a request that ends in the loop iteration where
        # a Ctrl-C cancels it, and asyncio.run then returns as if nothing happened
        # (tests/unit/test_probe.py)
        try:
            async with asyncio.timeout(timeout_s):
                await tr.send(tr.encode(req, PROBE_REQUEST_ID), rec)
        except TimeoutError:
            rec.error = f"timeout: no complete response after {timeout_s:g}s"
        finally:
            await tr.close()
        return rec

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop in this thread
        rec = asyncio.run(one())
    else:  # called from inside a loop (a Ray actor's thread): a loop of its own elsewhere
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            rec = pool.submit(asyncio.run, one()).result()
    if rec.error:
        raise RuntimeError(rec.error)
    return rec.status, b"".join(c for _, c in rec.chunks)


def before_load(server: Any, adapter: Any, model: str, extra: dict[str, Any] | None,
                warnings: list[str], *, send: Send | None = None, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """The run's checks before the load: returns the `extra` the load must use. Records the probe
    in server.info["request_probe"] (run.json) and appends a warning when fields were dropped,
    and one when the CPU server logged a slow path (servebench.engines.hostcpu)."""
    from servebench.engines.hostcpu import slow_path_warning

    slow = slow_path_warning(server.info)  # a CPU server that logged a slow path (process launcher)
    if slow:
        warnings.append(slow)
    if not str(server.base_url).startswith("http"):
        return extra  # SageMaker: the container's API is fixed by the spec
    send = send or http_send(server.base_url, timeout_s)  # --timeout: the probe is a request too
    neg = negotiate(send, lambda x: adapter.build(PROBE_PROMPT, PROBE_TOKENS, model=model, extra=x), extra)
    rec = neg.record()
    if neg.body:
        # the probe's tokens reach the server's counters too: record them, so every token the
        # server counted during the run is accounted for (run.json + requests.parquet)
        from servebench.analysis.decode import decode_record
        from servebench.records import RequestRecord

        r = RequestRecord(index=-1, status=neg.status or 0, chunks=[(0, neg.body)])
        decode_record(adapter, r)
        rec["prompt_tokens"], rec["output_tokens"] = r.server_input_tokens, r.server_output_tokens
    server.info["request_probe"] = rec
    w = neg.warning()
    if w:
        warnings.append(w)
    return neg.extra or None
