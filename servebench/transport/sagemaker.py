"""SageMaker transport: `invoke_endpoint_with_response_stream`, recorded like the HTTP one.

Each PayloadPart's bytes go into `RequestRecord.chunks` as (perf_counter_ns at receipt, bytes),
exactly as the HTTP transport stores de-chunked body reads, so the same SSE decoding runs after
the run. Parts are not re-framed here: one TGI event may be split across parts (mid-line, even
mid-UTF-8 character), which the SSE decoder already handles for TCP reads.

boto3 is blocking, so each request runs in a thread of a pool sized before t0 (the default
executor would silently cap concurrency at cpu+4). Timing limits, stated so numbers can be
read honestly: `sent_ns` is stamped by botocore's `before-send` event, after the request was
serialized and signed, as the HTTP transport stamps just before its write; `first_byte_ns` is
taken when boto3 returns the response (its head has been read), and each part is stamped after
botocore has parsed its event-stream frame. `--timeout` runs from the send, as over HTTP: a
stream that keeps trickling is cut at its first part past the deadline, not only a read that stalls
that long.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns
from typing import Any

from servebench.adapters.base import Request
from servebench.errors import folded
from servebench.records import RequestRecord
from servebench.transport.base import Transport

SCHEME = "sagemaker://"


def endpoint_url(name: str, region: str | None) -> str:
    """`sagemaker://NAME?region=R`: the region travels with the URL into every load worker and
    Ray actor, so the load goes where the endpoint was deployed, never boto3's default region."""
    return SCHEME + name + (f"?region={region}" if region else "")


def parse_endpoint(url: str) -> tuple[str, str | None]:
    """(endpoint name, region or None) of a sagemaker:// URL; ValueError otherwise."""
    rest = url[len(SCHEME):] if url.startswith(SCHEME) else ""
    name, _, query = rest.partition("?")
    name = name.rstrip("/")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if not name or set(params) - {"region"}:
        raise ValueError(f"SageMaker endpoint must look like sagemaker://<endpoint-name>[?region=<region>], got {url!r}")
    return name, params.get("region") or None


class SageMakerTransport(Transport):
    name = "sagemaker"

    def __init__(self, base_url: str, *, timeout_s: float = 600.0, client: Any = None,
                 region: str | None = None) -> None:
        self.endpoint, url_region = parse_endpoint(base_url)
        self.timeout_s = timeout_s
        self.region = region or url_region
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        self._size = 0
        self._sending = threading.local()  # the record whose request this thread is sending
        self._hooked = False
        self.connect_ns: list[int] = []  # boto3 opens its connections out of sight: none to report

    # -- before t0
    def encode(self, req: Request, request_id: int | None = None) -> bytes:
        """The invocation body: the adapter's TGI body plus `"stream": true` (the container
        streams /invocations only when asked in the body)."""
        body = json.loads(req.body)
        body["stream"] = True
        return json.dumps(body, separators=(",", ":")).encode()

    async def prepare(self, n: int, parallel: int = 64) -> None:
        """Create the client and `n` threads now, so neither lands inside a measurement."""
        if self.client is None:
            import boto3
            from botocore.config import Config

            # no retries: a retried streaming call would hide a failure and double its latency
            cfg = Config(max_pool_connections=max(n, 10), read_timeout=self.timeout_s,
                         retries={"total_max_attempts": 1, "mode": "standard"})
            # region_name=None lets boto3 use AWS_REGION / the profile's region
            self.client = boto3.client("sagemaker-runtime", region_name=self.region, config=cfg)
        events = getattr(getattr(self.client, "meta", None), "events", None)
        if events is not None and not self._hooked:
            events.register("before-send.sagemaker-runtime.InvokeEndpointWithResponseStream", self._stamp_sent)
            self._hooked = True
        if n > self._size:
            old, self._pool, self._size = self._pool, ThreadPoolExecutor(n, thread_name_prefix="sagemaker"), n
            if old is not None:
                old.shutdown(wait=False)
            # start every worker before t0
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(self._pool, lambda: None) for _ in range(n)))

    # -- during the load
    async def send(self, wire: bytes | Request, rec: RequestRecord) -> None:
        """Never raises for endpoint or network faults: they go to rec.error."""
        if isinstance(wire, Request):
            wire = self.encode(wire)
        if self._pool is None:
            await self.prepare(1)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._send_blocking, wire, rec)

    def _stamp_sent(self, **_kw: Any) -> None:
        rec = getattr(self._sending, "rec", None)
        if rec is not None:
            rec.sent_ns = perf_counter_ns()

    def _send_blocking(self, body: bytes, rec: RequestRecord) -> None:
        from botocore.exceptions import ClientError

        rec.sent_ns = perf_counter_ns()  # restamped by before-send once the request is built
        self._sending.rec = rec
        try:
            resp = self.client.invoke_endpoint_with_response_stream(
                EndpointName=self.endpoint, Body=body, ContentType="application/json")
        except ClientError as e:  # the endpoint answered with an error status
            rec.end_ns = perf_counter_ns()
            rec.status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            rec.error = _client_error(e)
            return
        except Exception as e:  # noqa: BLE001 - no answer: connection, timeout, credentials
            rec.end_ns = perf_counter_ns()
            rec.error = f"{type(e).__name__}: {folded(e)}"
            return
        finally:
            self._sending.rec = None
        rec.first_byte_ns = perf_counter_ns()
        rec.status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
        self._read(resp["Body"], rec)

    def _read(self, stream: Any, rec: RequestRecord) -> None:
        from botocore.exceptions import ClientError

        chunks, due = rec.chunks, rec.sent_ns + int(self.timeout_s * 1e9)
        try:
            for event in stream:
                now = perf_counter_ns()
                if now > due:  # arrived after the deadline: over HTTP it would never have been read
                    rec.error = f"timeout: no complete response after {self.timeout_s:g}s"
                    getattr(stream, "close", lambda: None)()
                    break
                part = event.get("PayloadPart")
                if part is not None:
                    chunks.append((now, part["Bytes"]))
        except ClientError as e:
            # ModelStreamError / InternalStreamFailure arrive as error events after the 200
            # head: the HTTP status stays what the server sent; the error says what happened
            rec.error = _client_error(e)
        except Exception as e:  # noqa: BLE001 - a cut or stalled stream (urllib3 raises its own)
            rec.error = f"{type(e).__name__}: {folded(e)}"
        finally:
            rec.end_ns = perf_counter_ns()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self._size = None, 0


def _client_error(e: Any) -> str:
    err = e.response.get("Error", {})
    return folded(f"{err.get('Code') or type(e).__name__}: {err.get('Message') or e}")
