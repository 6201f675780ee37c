"""SageMaker streaming transport against a local server speaking the real wire format
(AWS event-stream frames over HTTP), through a real boto3 client: botocore's own parsing of
PayloadPart and error events is exercised, not a stand-in for it."""

from __future__ import annotations

import asyncio
import binascii
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config

from servebench.adapters import ADAPTERS
from servebench.adapters.base import Request
from servebench.adapters.sse import SSEDecoder
from servebench.analysis.decode import decode_record
from servebench.records import RequestRecord
from servebench.transport.sagemaker import SageMakerTransport

# three TGI events; the second token is a 3-byte UTF-8 character
EVENTS = [
    b'data:{"index":1,"token":{"id":5,"text":" caf","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n',
    b'data:{"index":2,"token":{"id":6,"text":"\xe2\x82\xac","logprob":-0.2,"special":false},"generated_text":null,"details":null}\n\n',
    b'data:{"index":3,"token":{"id":7,"text":"!","logprob":-0.3,"special":false},"generated_text":" caf\xe2\x82\xac!",'
    b'"details":{"finish_reason":"length","generated_tokens":3,"seed":null,"input_length":4}}\n\n',
]
STREAM = b"".join(EVENTS)
euro = STREAM.index(b"\xe2\x82\xac")
# split mid-line (inside event 1's JSON), between event 1's line end and its blank line
# (mid-event), and inside the euro sign (mid-UTF-8 character)
CUTS = [30, len(EVENTS[0]) - 1, euro + 1, euro + 2]
PARTS = [STREAM[a:b] for a, b in zip([0] + CUTS, CUTS + [len(STREAM)])]


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (prelude, string headers, payload, CRCs)."""
    hb = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                  for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(hb) + len(payload), len(hb))
    msg = prelude + struct.pack(">I", binascii.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", binascii.crc32(msg))


def part(data: bytes) -> bytes:
    return frame({":message-type": "event", ":event-type": "PayloadPart",
                  ":content-type": "application/octet-stream"}, data)


def stream_error(kind: str, message: str) -> bytes:
    return frame({":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"},
                 json.dumps({"Message": message, "ErrorCode": "424"}).encode())


class FakeRuntime:
    """An HTTP server on 127.0.0.1:0 answering invoke_endpoint_with_response_stream."""

    def __init__(self):
        self.script: list[bytes] = []
        self.error_status: tuple[int, str, str] | None = None
        self.bodies: list[dict] = []
        self.gap_s = 0.01  # between frames
        self.cut = False  # reset the connection after the script, with no end of the chunked body
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                assert self.path.endswith("/invocations-response-stream"), self.path
                fake.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                if fake.error_status:
                    status, code, msg = fake.error_status
                    body = json.dumps({"message": msg}).encode()
                    self.send_response(status)
                    self.send_header("x-amzn-ErrorType", code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for msg in fake.script:  # one write per frame, with a gap so reads are separate
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(msg), msg))
                    self.wfile.flush()
                    time.sleep(fake.gap_s)
                if fake.cut:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.client = boto3.client(
            "sagemaker-runtime", region_name="us-west-2", endpoint_url=f"http://127.0.0.1:{self.httpd.server_address[1]}",
            aws_access_key_id="x", aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def runtime():
    fake = FakeRuntime()
    yield fake
    fake.close()


def run(runtime, req: Request, timeout_s: float = 10) -> RequestRecord:
    tr = SageMakerTransport("sagemaker://tgi-llama", client=runtime.client, timeout_s=timeout_s)
    rec = RequestRecord(index=0)

    async def go():
        await tr.prepare(2)
        wire = tr.encode(req, 0)
        await tr.send(wire, rec)
        await tr.close()

    asyncio.run(go())
    return rec


def tgi_request():
    return ADAPTERS["tgi"].build("hello there friend", 3, model="m")


def test_parts_split_mid_event_mid_line_mid_utf8(runtime):
    runtime.script = [part(p) for p in PARTS]
    rec = run(runtime, tgi_request())
    assert rec.status == 200 and rec.error is None
    assert [c for _, c in rec.chunks] == PARTS  # bytes exactly as sent, one chunk per PayloadPart
    stamps = [t for t, _ in rec.chunks]
    assert rec.sent_ns < rec.first_byte_ns <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= rec.end_ns
    assert runtime.bodies[0]["stream"] is True and runtime.bodies[0]["parameters"]["max_new_tokens"] == 3
    # the same SSE payloads as from the unsplit stream
    dec = SSEDecoder()
    payloads = [p for _, c in rec.chunks for p in dec.feed(c)] + dec.close()
    assert payloads == [e[len(b"data:"):-2] for e in EVENTS]
    # and decoding gives what TGI said, each token stamped by the part that completed it
    decode_record(ADAPTERS["tgi"], rec)
    assert rec.error is None and list(rec.token_counts) == [1, 1, 1]
    assert list(rec.token_ns) == [stamps[2], stamps[4], stamps[4]]
    assert (rec.server_input_tokens, rec.server_output_tokens, rec.finish_reason) == (4, 3, "length")


def test_model_stream_error_mid_stream(runtime):
    runtime.script = [part(EVENTS[0]), stream_error("ModelStreamError", "CUDA error: device-side assert\ntriggered")]
    rec = run(runtime, tgi_request())
    assert rec.status == 200 and [c for _, c in rec.chunks] == [EVENTS[0]]
    assert rec.error.startswith("ModelStreamError: CUDA error: device-side assert triggered") and "\n" not in rec.error
    assert rec.end_ns >= rec.chunks[-1][0] and not rec.ok


def test_a_connection_cut_mid_stream_fails_the_request_and_keeps_its_tokens(runtime):
    # urllib3 raises its own errors out of the event stream: they must not escape send()
    runtime.script, runtime.cut = [part(EVENTS[0])], True
    rec = run(runtime, tgi_request())
    assert rec.status == 200 and [c for _, c in rec.chunks] == [EVENTS[0]]
    assert rec.error and "\n" not in rec.error and rec.end_ns >= rec.chunks[-1][0] and not rec.ok


def test_the_timeout_runs_from_the_send_not_per_read(runtime):
    # a part every 0.3 s never stalls a read for 0.5 s, but the response is due 0.5 s after the send
    runtime.script, runtime.gap_s = [part(e) for e in EVENTS] * 3, 0.3
    rec = run(runtime, tgi_request(), timeout_s=0.5)
    assert rec.error == "timeout: no complete response after 0.5s" and 1 <= len(rec.chunks) < 9
    assert all(t - rec.sent_ns <= 0.5e9 for t, _ in rec.chunks)


def test_sent_is_stamped_once_the_request_is_built_and_signed(runtime):
    built: list[int] = []
    runtime.client.meta.events.register(
        "before-parameter-build.sagemaker-runtime.InvokeEndpointWithResponseStream",
        lambda **_kw: built.append(time.perf_counter_ns()))
    runtime.script = [part(e) for e in EVENTS]
    rec = run(runtime, tgi_request())
    assert rec.ok and built and rec.sent_ns > built[0]


def test_error_status_before_stream(runtime):
    runtime.error_status = (424, "ModelError", "Received client error (422) from primary: Input validation error")
    rec = run(runtime, tgi_request())
    assert rec.status == 424 and rec.chunks == [] and rec.first_byte_ns == 0
    assert rec.error == "ModelError: Received client error (422) from primary: Input validation error"
    assert rec.end_ns > rec.sent_ns > 0


def test_unreachable_endpoint_goes_to_error_not_exception():
    client = boto3.client("sagemaker-runtime", region_name="us-west-2", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"total_max_attempts": 1}, connect_timeout=1))
    tr = SageMakerTransport("sagemaker://x", client=client)
    rec = RequestRecord(index=0)
    asyncio.run(tr.send(Request("POST", "/generate_stream", b'{"inputs":"a","parameters":{}}'), rec))
    assert rec.status == 0 and rec.error.startswith("EndpointConnectionError: ") and rec.end_ns > rec.sent_ns


def test_bad_endpoint_url():
    with pytest.raises(ValueError, match="sagemaker://<endpoint-name>"):
        SageMakerTransport("http://x")


class _Boto3Fake:
    """boto3.client stand-in: records how each client was made (no AWS call is made)."""

    def __init__(self):
        self.made: list[tuple[str, str | None]] = []

    def client(self, service, region_name=None, **_kw):
        self.made.append((service, region_name))
        return object()


@pytest.mark.parametrize("url,region,want", [
    ("sagemaker://bench-1?region=us-west-2", None, "us-west-2"),  # as the launchers hand it on
    ("sagemaker://bench-1", "eu-central-1", "eu-central-1"),
    ("sagemaker://bench-1", None, None),  # nothing given: boto3's own resolution (AWS_REGION, profile)
])
def test_runtime_client_is_made_in_the_endpoints_region(monkeypatch, url, region, want):
    fake = _Boto3Fake()
    monkeypatch.setattr(boto3, "client", fake.client)
    tr = SageMakerTransport(url, region=region)
    asyncio.run(tr.prepare(1))
    asyncio.run(tr.close())
    assert tr.endpoint == "bench-1" and fake.made == [("sagemaker-runtime", want)]


def test_load_worker_job_keeps_the_region(monkeypatch):
    """--workers N: each load process builds its transport from the job's base_url alone."""
    from servebench.transport import transport_class

    fake = _Boto3Fake()
    monkeypatch.setattr(boto3, "client", fake.client)
    tr = transport_class("sagemaker")("sagemaker://bench-1?region=ap-south-1", timeout_s=5)
    asyncio.run(tr.prepare(1))
    asyncio.run(tr.close())
    assert fake.made == [("sagemaker-runtime", "ap-south-1")]


@pytest.mark.parametrize("bad", ["sagemaker://", "sagemaker://x?zone=1", "sagemaker://?region=us-west-2"])
def test_bad_sagemaker_urls(bad):
    with pytest.raises(ValueError, match=r"sagemaker://<endpoint-name>\[\?region=<region>\]"):
        SageMakerTransport(bad)
