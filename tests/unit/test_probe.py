"""servebench.transport.probe: a server that rejects a field servebench added is retried once without it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servebench.adapters import ADAPTERS
from servebench.launchers.base import Server
from servebench.transport.probe import before_load, named_fields, negotiate

COMPLETIONS = ADAPTERS["openai-completions"]

# rejection bodies as the servers write them (transformers serve: recorded from the real server
# here; FastAPI extra=forbid; OpenAI's own API)
STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"
TRANSFORMERS_422 = (STREAMS / "transformers_422.sse").read_bytes()
FASTAPI_422 = json.dumps({"detail": [
    {"type": "extra_forbidden", "loc": ["body", "ignore_eos"], "msg": "Extra inputs are not permitted"},
    {"type": "extra_forbidden", "loc": ["body", "return_token_ids"], "msg": "Extra inputs are not permitted"},
]}).encode()
OPENAI_400 = b'{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error"}}'


def build(extra):
    return COMPLETIONS.build("Hello", 2, model="m", extra=extra)


class Strict:
    """A fake send that rejects the listed fields with `body` and records every request body."""

    def __init__(self, reject: set[str], status: int, body: bytes) -> None:
        self.reject, self.status, self.body, self.sent = reject, status, body, []

    def __call__(self, req):
        sent = json.loads(req.body)
        self.sent.append(sent)
        if self.reject & set(sent):
            return self.status, self.body
        return 200, b'data: {"choices":[{"text":"a","finish_reason":"length"}]}\n\n'


@pytest.mark.parametrize("status, body, dropped", [
    (422, TRANSFORMERS_422, ["ignore_eos"]),
    (422, FASTAPI_422, ["ignore_eos", "return_token_ids"]),
    (400, OPENAI_400, ["stream_options"]),
])
def test_rejected_fields_are_dropped_and_retried_once(status, body, dropped):
    send = Strict(set(dropped), status, body)
    neg = negotiate(send, build, {"return_token_ids": True})
    assert neg.dropped == dropped and neg.error is None and neg.status == 200
    assert neg.rejected_status == status
    assert len(send.sent) == 2
    assert not set(dropped) & set(send.sent[1])  # the retry went without them
    assert "model" in send.sent[1] and "max_tokens" in send.sent[1]
    # the load builds its requests with the returned extra: the fields are gone there too
    assert not set(dropped) & set(json.loads(build(neg.extra).body))


def test_ignore_eos_drop_says_output_length_is_no_longer_forced():
    neg = negotiate(Strict({"ignore_eos"}, 422, TRANSFORMERS_422), build, None)
    rec = neg.record()
    assert rec["dropped"] == ["ignore_eos"] and "output length no longer forced" in rec["meaning"]["ignore_eos"]
    assert "HTTP 422" in neg.warning() and "shortfall" in neg.warning()


def test_retry_happens_only_once():
    # the server rejects ignore_eos first, then (after it is dropped) stream_options: no second retry
    calls = []

    def send(req):
        sent = json.loads(req.body)
        calls.append(sent)
        if "ignore_eos" in sent:
            return 422, TRANSFORMERS_422
        return 422, b'{"detail":"Unexpected fields in the request: {\'stream_options\'}"}'

    neg = negotiate(send, build, None)
    assert len(calls) == 2 and neg.dropped == ["ignore_eos"]
    assert neg.error == "HTTP 422: Unexpected fields in the request: {'stream_options'}"


@pytest.mark.parametrize("status, body", [
    (400, b'{"error":{"message":"This model\'s maximum context length is 1024 tokens."}}'),  # names no field
    (500, TRANSFORMERS_422),  # not a rejection of the request's shape
    (422, b'{"detail":"model: field required"}'),  # essential fields are never dropped
])
def test_errors_that_name_no_droppable_field_are_not_retried(status, body):
    send = Strict({"model", "ignore_eos"}, status, body)
    neg = negotiate(send, build, None)
    assert len(send.sent) == 1 and neg.dropped == [] and neg.error.startswith(f"HTTP {status}: ")
    assert neg.warning() is None


def test_names_must_be_whole_words():
    sent = {"temperature": 0, "ignore_eos": True, "max_completion_tokens": 5, "max_tokens": 5}
    assert named_fields("unknown field ignore_eos_x and temperatures", sent) == []
    assert named_fields("max_tokens is too large", sent) == []  # essential
    assert named_fields("'max_completion_tokens' not allowed", sent) == ["max_completion_tokens"]


def test_accepted_request_changes_nothing():
    send = Strict(set(), 422, b"")
    neg = negotiate(send, build, {"return_token_ids": True})
    assert neg.extra == {"return_token_ids": True} and neg.dropped == [] and neg.status == 200
    assert len(send.sent) == 1


def test_transport_failure_ends_the_probe_quietly():
    def send(req):
        raise RuntimeError("ConnectError: refused")

    neg = negotiate(send, build, None)
    assert neg.error == "ConnectError: refused" and neg.dropped == [] and neg.extra == {}


class _StrictHandler(BaseHTTPRequestHandler):
    """A real HTTP server rejecting ignore_eos as transformers serve does (status + body)."""

    bodies: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if "ignore_eos" in body:
            status, out = 422, TRANSFORMERS_422
        else:  # transformers' shape: usage in the finish chunk, no [DONE]
            status, out = 200, (b'data: {"choices":[{"text":"a"}]}\n\ndata: {"choices":[{"text":"",'
                                b'"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n')
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_before_load_over_http_records_the_drop_in_server_info():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StrictHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        server = Server(base_url=f"http://127.0.0.1:{httpd.server_address[1]}", engine="openai", adapter="openai-completions")
        warnings: list[str] = []
        extra = before_load(server, COMPLETIONS, "m", None, warnings)
    finally:
        httpd.shutdown()
    assert extra == {"ignore_eos": None}
    assert server.info["request_probe"]["dropped"] == ["ignore_eos"]
    assert server.info["request_probe"]["status"] == 200
    # the probe's tokens as the server counted them
    assert (server.info["request_probe"]["prompt_tokens"], server.info["request_probe"]["output_tokens"]) == (3, 2)
    assert "body" not in server.info["request_probe"]
    assert len(warnings) == 1 and "ignore_eos" in warnings[0]
    assert [("ignore_eos" in b) for b in _StrictHandler.bodies] == [True, False]


def test_before_load_skips_sagemaker():
    server = Server(base_url="sagemaker://ep", engine="tgi", adapter="tgi")
    assert before_load(server, ADAPTERS["tgi"], "m", {"x": 1}, []) == {"x": 1}
    assert "request_probe" not in server.info


def test_a_ctrl_c_in_the_instant_the_probe_ends_is_not_lost(monkeypatch):
    """A Ctrl-C (or a Ray task cancel, which runs the SIGINT handler when the loop next wakes)
    that cancels the probe in the loop iteration where its response ends. Under
    asyncio.wait_for on Python 3.11 the finished request was returned and asyncio.run went on
    as if nothing happened: the run measured its whole load. The interrupt must come out as
    KeyboardInterrupt. (The Ray sweep's 'done' cells had another cause, SIGINT ignored in the
    workers: test_signals.py, docs/faults.md.)"""
    import signal

    from servebench.transport import probe
    from servebench.transport.http import HttpTransport

    async def ends_as_ctrl_c_arrives(self, wire, rec):
        signal.raise_signal(signal.SIGINT)  # asyncio.run's handler: cancel the main task
        rec.status, rec.end_ns, rec.chunks = 200, 1, [(1, b"data: [DONE]\n\n")]

    monkeypatch.setattr(HttpTransport, "send", ends_as_ctrl_c_arrives)
    # asyncio.run installs its handler only over Python's default one, which a test runner
    # started as a shell's background job does not have (SIGINT ignored): set it here
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            probe._send_by_deadline("http://127.0.0.1:9", build({}), 5.0)
    finally:
        signal.signal(signal.SIGINT, previous)
