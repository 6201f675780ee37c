"""The emulator's HTTP side and wire formats: what a client sees, byte for byte."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from click.testing import CliRunner

from servebench.adapters import ADAPTERS
from servebench.analysis.decode import decode_record
from servebench.emulator import EmulatorError, read_log, start_emulator
from servebench.emulator.cli import emulate
from servebench.emulator.formats import chat_reply
from servebench.records import RequestRecord

ADAPTER_OF = {"openai": "openai-completions", "openai-chat": "openai-chat", "tgi": "tgi",
              "lightllm": "lightllm", "sglang": "sglang"}


@pytest.fixture
def emu(tmp_path):
    started = []

    def make(fmt="openai", ttft_ms=5.0, itl_ms=2.0, **kw):
        h = start_emulator(fmt, ttft_ms, itl_ms, mode="thread", log=tmp_path / f"emu{len(started)}.jsonl", **kw)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()


def conn_to(h) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)


def post(h, path, body, headers=None, conn=None):
    c = conn or conn_to(h)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def sse_payloads(body: bytes) -> list[bytes]:
    out = []
    for ev in body.split(b"\n\n"):
        if ev.startswith(b"data:"):
            out.append(ev[5:].removeprefix(b" "))
    return out


def test_openai_stream_is_vllm_shaped_with_usage_and_done(emu):
    h = emu("openai")
    body = {"model": "m", "prompt": "one two three", "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    status, headers, raw = post(h, "/v1/completions", body, {"X-Request-Id": "41"})
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert raw.count(b"data: ") == 6 and raw.endswith(b"data: [DONE]\n\n")  # vLLM: space after colon
    events = [json.loads(p) for p in sse_payloads(raw)[:-1]]
    assert [e["choices"][0]["finish_reason"] for e in events[:4]] == [None, None, None, "length"]
    assert all(e["object"] == "text_completion" and e["id"] == "cmpl-41" for e in events)
    assert events[4]["choices"] == [] and events[4]["usage"] == {
        "prompt_tokens": 3, "total_tokens": 7, "completion_tokens": 4}


def test_openai_without_include_usage_has_no_usage_chunk(emu):
    h = emu("openai")
    _, _, raw = post(h, "/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True})
    payloads = sse_payloads(raw)
    assert len(payloads) == 3 and payloads[-1] == b"[DONE]"


def test_chat_role_chunk_then_content_deltas(emu):
    h = emu("openai-chat")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    _, _, raw = post(h, "/v1/chat/completions", body)
    events = [json.loads(p) for p in sse_payloads(raw)[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # the first token is a word derived from the conversation (multi-turn clients must send it back)
    assert [e["choices"][0]["delta"]["content"] for e in events[1:]] == [chat_reply("hi"), " the", " the"]
    assert events[-1]["object"] == "chat.completion.chunk"
    assert [e["choices"][0]["finish_reason"] for e in events[1:]] == [None, None, "length"]
    _, _, again = post(h, "/v1/chat/completions", body)
    assert again.count(chat_reply("hi").encode()) == 1  # deterministic: the same conversation, the same answer
    other = {**body, "messages": body["messages"] + [{"role": "assistant", "content": chat_reply("hi")},
                                                     {"role": "user", "content": "and?"}]}
    _, _, raw2 = post(h, "/v1/chat/completions", other)
    assert chat_reply("hi").encode() not in raw2 and b' r' in raw2  # a new turn, a new answer
    one = {**body, "max_tokens": 1}
    _, _, raw1 = post(h, "/v1/chat/completions", one)
    ev1 = [json.loads(p) for p in sse_payloads(raw1)[:-1]]
    assert [e["choices"][0]["finish_reason"] for e in ev1] == [None, "length"]


def test_tgi_stream_matches_documented_bytes(emu):
    h = emu("tgi")
    body = {"inputs": "a b c d", "parameters": {"max_new_tokens": 2, "details": True}}
    _, headers, raw = post(h, "/generate_stream", body)
    assert headers["content-type"].startswith("text/event-stream")
    assert raw == (
        b'data:{"index":1,"token":{"id":279,"text":" the","logprob":-0.5,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data:{"index":2,"token":{"id":279,"text":" the","logprob":-0.5,"special":false},'
        b'"generated_text":" the the","details":{"finish_reason":"length","generated_tokens":2,'
        b'"seed":null,"input_length":4}}\n\n')


def test_lightllm_last_event_has_finished_true(emu):
    h = emu("lightllm")
    _, _, raw = post(h, "/generate_stream", {"inputs": "a b", "parameters": {"max_new_tokens": 3}})
    events = [json.loads(p) for p in sse_payloads(raw)]
    assert [e["finished"] for e in events] == [False, False, True]
    assert [e["token"]["count_output_tokens"] for e in events] == [1, 2, 3]
    assert events[-1]["finish_reason"] == "length" and b"[DONE]" not in raw


def test_sglang_cumulative_text_meta_info_and_done(emu):
    h = emu("sglang")
    body = {"text": "p q", "sampling_params": {"max_new_tokens": 3}, "stream": True}
    _, _, raw = post(h, "/generate", body)
    payloads = sse_payloads(raw)
    assert payloads[-1] == b"[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert [e["text"] for e in events] == [" the", " the the", " the the the"]
    assert [e["meta_info"]["completion_tokens"] for e in events] == [1, 2, 3]
    assert events[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 3}


@pytest.mark.parametrize("fmt", list(ADAPTER_OF))
def test_every_format_decodes_with_its_adapter(emu, fmt):
    h = emu(fmt)
    adapter = ADAPTERS[ADAPTER_OF[fmt]]
    req = adapter.build("alpha beta gamma delta", 7, model="emulator")
    c = conn_to(h)
    c.request(req.method, req.path, req.body, dict(req.headers))
    r = c.getresponse()
    rec = RequestRecord(index=0, status=r.status, end_ns=1, chunks=[(1, r.read())])
    decode_record(adapter, rec)
    assert rec.error is None
    assert sum(rec.token_counts) == 7 and rec.finish_reason == "length"
    if fmt != "lightllm":  # LightLLM's stream has no input length field the adapter reads
        assert rec.server_input_tokens == 4
    assert rec.server_output_tokens in (None, 7)


def test_non_streaming_bodies(emu):
    h = emu("tgi", ttft_ms=4, itl_ms=3)
    status, headers, raw = post(h, "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 5}})
    assert status == 200 and json.loads(raw)["generated_text"] == " the" * 5
    assert headers["x-generated-tokens"] == "5" and int(headers["x-inference-time"]) >= 16  # 4 + 4*3 ms
    h2 = emu("openai")
    status, _, raw = post(h2, "/v1/completions", {"prompt": "a b", "max_tokens": 2})
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 2


def test_keep_alive_serves_many_requests_on_one_connection(emu):
    h = emu("openai", ttft_ms=1, itl_ms=1)
    c = conn_to(h)
    post(h, "/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True}, conn=c)
    sock = c.sock
    for _ in range(3):
        status, _, _ = post(h, "/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True}, conn=c)
        assert status == 200
    assert c.sock is sock  # http.client reconnects silently if the server had closed it
    status, headers, _ = post(h, "/v1/completions", {"prompt": "x", "max_tokens": 1}, {"Connection": "close"}, conn=c)
    assert status == 200 and headers.get("connection") == "close"


def test_pipelined_requests_are_answered_in_order(emu):
    h = emu("openai", ttft_ms=1, itl_ms=1)
    one = json.dumps({"prompt": "x", "max_tokens": 2, "stream": True}).encode()
    wire = b"".join(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: %d\r\nContent-Length: %d\r\n\r\n%b"
                    % (i, len(one), one) for i in range(2))
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        s.sendall(wire)
        got = b""
        while got.count(b"0\r\n\r\n") < 2:
            got += s.recv(65536)
    assert got.index(b"cmpl-0") < got.index(b"cmpl-1")
    h.stop()
    assert [r["id"] for r in h.records()] == ["0", "1"]


def test_health_models_metrics_and_unknown_routes(emu):
    from prometheus_client.parser import text_string_to_metric_families

    h = emu("openai", ttft_ms=3000, itl_ms=1, model="tiny-x")  # long TTFT: both still waiting when read
    c = conn_to(h)
    c.request("GET", "/health")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.request("GET", "/v1/models")
    assert json.loads(c.getresponse().read())["data"][0]["id"] == "tiny-x"
    held = []
    for _ in range(2):  # two streams waiting for their first token
        hc = conn_to(h)
        hc.request("POST", "/v1/completions", json.dumps({"prompt": "a b c", "max_tokens": 1, "stream": True}))
        held.append(hc)
    deadline = time.monotonic() + 2.5  # on a busy host the server may take a while to read both
    while True:
        c.request("GET", "/metrics")
        fams = {f.name: f.samples[0].value for f in text_string_to_metric_families(c.getresponse().read().decode())}
        if fams["vllm:num_requests_running"] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert fams["vllm:num_requests_running"] == 2 and fams["vllm:num_requests_waiting"] == 0
    assert fams["vllm:prompt_tokens"] == 6  # the parser strips _total from counters
    c.request("GET", "/nope")
    r = c.getresponse()
    assert r.status == 404 and json.loads(r.read())["object"] == "error"
    for hc in held:
        hc.close()


@pytest.mark.parametrize("body, why", [
    (b"not json", "Expecting value"),
    (b'{"prompt": "x", "max_tokens": 0}', "max_tokens must be a positive integer"),
    (b'{"max_tokens": 3}', "prompt must be a string"),
])
def test_bad_requests_get_the_engines_error_body(emu, body, why):
    h = emu("openai")
    c = conn_to(h)
    c.request("POST", "/v1/completions", body)
    r = c.getresponse()
    err = json.loads(r.read())
    assert r.status == 400 and why in err["message"] and err["type"] == "BadRequestError"


def test_tgi_validation_error_is_422_with_error_type(emu):
    h = emu("tgi")
    status, _, raw = post(h, "/generate_stream", {"inputs": 5})
    assert status == 422 and json.loads(raw) == {"error": "inputs must be a string", "error_type": "validation"}


def test_client_disconnect_is_logged_and_the_server_keeps_serving(emu):
    h = emu("openai", ttft_ms=1, itl_ms=20)
    one = json.dumps({"prompt": "x", "max_tokens": 50, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b" % (len(one), one))
        assert b"text_completion" in s.recv(65536) or b"text_completion" in s.recv(65536)
    time.sleep(0.1)
    status, _, _ = post(h, "/v1/completions", {"prompt": "x", "max_tokens": 1, "stream": True})
    assert status == 200
    h.stop()
    gone = [r for r in h.records() if r["outcome"] == "client_closed"]
    assert len(gone) == 1 and 1 <= len(gone[0]["token_ns"]) < 50


def test_process_mode_serves_and_stop_flushes_the_log(tmp_path):
    log = tmp_path / "p.jsonl"
    h = start_emulator("sglang", 2, 1, log=log)
    try:
        status, _, _ = post(h, "/generate", {"text": "a", "sampling_params": {"max_new_tokens": 3}, "stream": True})
        assert status == 200
    finally:
        h.stop()
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(h.pid, 0)
    recs = read_log(log)
    assert len(recs) == 1 and len(recs[0]["token_ns"]) == 3 and recs[0]["outcome"] == "ok"


def test_start_failure_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(EmulatorError, match="(?i)emulator did not start: .*address already in use") as ei:
            start_emulator("openai", port=s.getsockname()[1], log=tmp_path / "x.jsonl", timeout_s=20)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("args, msg", [
    (["--fail-rate", "2"], "fail_rate: Input should be less than or equal to 1"),
    (["--ttft-ms", "-1"], "ttft_ms: Input should be greater than or equal to 0"),
    (["--format", "nope"], "Invalid value for '--format'"),
])
def test_cli_rejects_bad_options_in_one_line(args, msg):
    res = CliRunner().invoke(emulate, args)
    assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output


def test_cli_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = CliRunner().invoke(emulate, ["--port", str(s.getsockname()[1])])
    assert res.exit_code == 1 and res.output.startswith("Error: emulator:") and "Traceback" not in res.output


@pytest.mark.parametrize("args, msg", [
    (["--tokenizer", "/nonexistent/tok.json"], "emulator: cannot load tokenizer /nonexistent/tok.json"),
    (["--log", "/nonexistent/dir/x.jsonl"], "emulator: No such file or directory: /nonexistent/dir/x.jsonl"),
])
def test_cli_bad_files_are_one_line(args, msg):
    res = CliRunner().invoke(emulate, args)
    assert res.exit_code == 1 and msg in res.output and len(res.output.strip().splitlines()) == 1


def test_prompt_tokens_counted_with_a_tokenizer_file(emu, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # "a,b" -> a , b: 3 tokens, 1 word
    tok.save(str(tmp_path / "tokenizer.json"))
    h = emu("openai", tokenizer=str(tmp_path))
    body = {"prompt": "a,b c", "max_tokens": 1, "stream": True, "stream_options": {"include_usage": True}}
    _, _, raw = post(h, "/v1/completions", body)
    assert json.loads(sse_payloads(raw)[-2])["usage"]["prompt_tokens"] == 4
