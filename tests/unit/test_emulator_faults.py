"""The emulator's --fault modes, each observed on the wire (the CLI-level consequences are in
test_faults_cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from servebench.emulator.faults import GARBAGE, Faults, parse
from servebench.emulator.handle import start_emulator

BODY = {"model": "emulator", "prompt": "a b c", "max_tokens": 6, "stream": True}


def test_parse_every_documented_fault():
    f = parse(["kill-after=3s", "hang-after=20", "status=503:0.3", "reset:0.1", "garbage-after=5", "slow-headers=2s"])
    assert f == Faults(kill_after_s=3.0, hang_after_tokens=20, status=503, status_rate=0.3, reset_rate=0.1,
                       garbage_after=5, slow_headers_s=2.0)
    assert parse(["kill-after=5", "hang-after=500ms", "status=500", "reset"]) == Faults(
        kill_after_requests=5, hang_after_s=0.5, status=500, status_rate=1.0, reset_rate=1.0)


@pytest.mark.parametrize("spec,needle", [
    ("explode", "unknown fault 'explode'"), ("status=200", "HTTP error status"), ("reset:1.5", "must be in (0, 1]"),
    ("kill-after=soon", "expected a duration"), ("slow-headers=3", "expected a duration"),
    ("garbage-after=0", "token count >= 1"),
])
def test_bad_fault_specs_are_one_line_errors(spec, needle):
    with pytest.raises(ValueError) as e:
        parse([spec])
    assert needle in str(e.value)


def test_cli_rejects_a_bad_fault_in_one_line():
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "emulate", "--fault", "explode"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "unknown fault 'explode'" in p.stderr and "Traceback" not in p.stderr


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.strip()]


def test_status_fault_answers_with_that_status():
    with start_emulator("openai", ttft_ms=1, itl_ms=1, mode="thread", faults=["status=503"]) as emu:
        r = httpx.post(emu.url + "/v1/completions", json=BODY, timeout=10)
    assert r.status_code == 503 and "overloaded" in r.json()["message"]  # vLLM's error body


def test_garbage_after_puts_one_malformed_event_mid_stream():
    with start_emulator("openai", ttft_ms=1, itl_ms=1, mode="thread", faults=["garbage-after=2"]) as emu:
        r = httpx.post(emu.url + "/v1/completions", json=BODY, timeout=10)
    evs = events(r.text)
    assert evs[2] + "\n\n" == GARBAGE.decode() and evs[-1] == "data: [DONE]"
    assert sum(1 for e in evs if '"text"' in e) == 6  # the rest of the stream still comes


def test_hang_after_stops_writing_but_keeps_the_connection():
    with start_emulator("openai", ttft_ms=1, itl_ms=1, mode="thread", faults=["hang-after=3"]) as emu:
        got = []
        with httpx.Client(timeout=httpx.Timeout(10, read=1.0)) as c, c.stream("POST", emu.url + "/v1/completions", json=BODY) as r:
            with pytest.raises(httpx.ReadTimeout):  # no close, no error: just silence
                for chunk in r.iter_text():
                    got.append(chunk)
    assert len(events("".join(got))) == 3


def test_slow_headers_delay_the_response_head():
    with start_emulator("openai", ttft_ms=1, itl_ms=1, mode="thread", faults=["slow-headers=600ms"]) as emu:
        t = time.perf_counter()
        with httpx.Client(timeout=10) as c, c.stream("POST", emu.url + "/v1/completions", json=BODY) as r:
            head_s = time.perf_counter() - t
            body = r.read().decode()
    assert head_s >= 0.6 and events(body)[-1] == "data: [DONE]"


def test_reset_cuts_the_stream_with_a_tcp_reset():
    with start_emulator("openai", ttft_ms=1, itl_ms=1, mode="thread", faults=["reset"]) as emu:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(emu.url + "/v1/completions", json=BODY, timeout=10)


def test_kill_after_count_drops_the_server(tmp_path):
    log = tmp_path / "emu.jsonl"
    emu = start_emulator("openai", ttft_ms=1, itl_ms=1, faults=["kill-after=1"], log=log)  # a process: it dies
    try:
        assert httpx.post(emu.url + "/v1/completions", json=BODY, timeout=10).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.post(emu.url + "/v1/completions", json=BODY, timeout=10)
        with pytest.raises(httpx.ConnectError):  # nothing listens any more
            httpx.get(emu.url + "/health", timeout=5)
    finally:
        emu.stop()
    served = [json.loads(ln) for ln in log.read_text().splitlines() if '"request"' in ln]
    assert len(served) == 1 and served[0]["outcome"] == "ok"  # the log was flushed before the kill
