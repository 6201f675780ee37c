"""The emulator's clock, checked from its own log: absolute deadlines, jitter, slowdown,
queueing and failure injection. The emulator runs in its own process, as in accuracy runs."""

from __future__ import annotations

import http.client
import json
import statistics
import threading

import pytest

from servebench.emulator import start_emulator

MS = 1_000_000


def stream(port: int, n: int, rid: str | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"prompt": "a b", "max_tokens": n, "stream": True})
    c.request("POST", "/v1/completions", body, {"X-Request-Id": rid} if rid else {})
    r = c.getresponse()
    try:
        return r.status, r.read()
    except http.client.IncompleteRead as e:
        return -1, e.partial
    finally:
        c.close()


def concurrently(port: int, sizes: list[int]) -> None:
    ts = [threading.Thread(target=stream, args=(port, n, str(i))) for i, n in enumerate(sizes)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)


def lateness_ms(rec: dict, ttft_ms: float, itl_ms: float) -> list[float]:
    base = rec["start_ns"] + ttft_ms * MS
    return [(t - base - i * itl_ms * MS) / MS for i, t in enumerate(rec["token_ns"])]


def run(sizes: list[int], tmp_path, ttft_ms=20.0, itl_ms=5.0, **kw) -> list[dict]:
    h = start_emulator("openai", ttft_ms, itl_ms, log=tmp_path / "t.jsonl", **kw)
    try:
        concurrently(h.port, sizes)
    finally:
        h.stop()
    return sorted(h.records(), key=lambda r: int(r["id"]))


def test_tokens_are_written_on_absolute_deadlines_without_drift(tmp_path):
    (rec,) = run([150], tmp_path)
    late = lateness_ms(rec, 20, 5)
    assert len(late) == 150 and rec["outcome"] == "ok"
    assert min(late) >= 0  # never before its deadline
    # a server that sleeps ITL after each write drifts by its per-token overhead (>= 0.1 ms
    # with millisecond timers): 15+ ms by the end. Absolute deadlines keep the tail on time.
    assert min(late[-20:]) < 3.0
    gaps = [(b - a) / MS for a, b in zip(rec["token_ns"], rec["token_ns"][1:])]
    assert abs(statistics.fmean(gaps) - 5.0) < 0.2


def test_twenty_concurrent_streams_each_keep_their_own_deadlines(tmp_path):
    recs = run([60] * 20, tmp_path)
    assert len(recs) == 20 and all(r["outcome"] == "ok" for r in recs)
    for r in recs:
        late = lateness_ms(r, 20, 5)
        assert min(late) >= 0 and min(late[-10:]) < 5.0
        assert r["arrival_ns"] == r["start_ns"]  # no cap: nobody waits


def test_jitter_spreads_gaps_but_does_not_accumulate(tmp_path):
    (plain,) = run([120], tmp_path)
    (jit,) = run([120], tmp_path, jitter_ms=6.0, seed=7)
    gaps = lambda r: [(b - a) / MS for a, b in zip(r["token_ns"], r["token_ns"][1:])]
    assert statistics.pstdev(gaps(jit)) > 1.0 > statistics.pstdev(gaps(plain))
    late = lateness_ms(jit, 20, 5)
    assert min(late) >= 0 and min(late[-20:]) < 6.0 + 3.0
    assert abs(statistics.fmean(gaps(jit)) - 5.0) < 0.3


def test_batch_slowdown_scales_itl_with_running_streams(tmp_path):
    alone = run([40], tmp_path, batch_slowdown=1.0)
    both = run([40, 40], tmp_path, batch_slowdown=1.0)
    gap = lambda r: statistics.median((b - a) / MS for a, b in zip(r["token_ns"], r["token_ns"][1:]))
    assert gap(alone[0]) == pytest.approx(5.0, abs=1.0)
    assert gap(both[0]) == pytest.approx(10.0, abs=1.5)  # ITL * (1 + 1.0 * (2 - 1))


def test_max_running_queues_the_rest(tmp_path):
    a, b = run([30, 30], tmp_path, max_running=1)
    first, second = sorted((a, b), key=lambda r: r["start_ns"])
    assert second["start_ns"] >= first["end_ns"]
    assert second["token_ns"][0] - second["start_ns"] >= 20 * MS
    assert second["start_ns"] - second["arrival_ns"] > 100 * MS  # it waited ~a whole stream


def test_fail_rate_one_error_mode_answers_500_json(tmp_path):
    h = start_emulator("openai", 1, 1, log=tmp_path / "e.jsonl", fail_rate=1.0, fail_mode="error")
    try:
        c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        c.request("POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": 3, "stream": True}))
        r = c.getresponse()
        body = json.loads(r.read())
    finally:
        h.stop()
    assert r.status == 500 and body["object"] == "error" and body["code"] == 500
    assert [x["outcome"] for x in h.records()] == ["error"]


def test_abort_mode_cuts_the_stream_before_its_end(tmp_path):
    h = start_emulator("openai", 1, 1, log=tmp_path / "e.jsonl", fail_rate=1.0, fail_mode="abort")
    try:
        status, partial = stream(h.port, 20)
    finally:
        h.stop()
    (rec,) = h.records()
    assert status == -1 and b"[DONE]" not in partial  # the client saw an incomplete body
    assert rec["outcome"] == "abort" and 1 <= len(rec["token_ns"]) < 20
    assert partial.count(b"text_completion") == len(rec["token_ns"])


def outcomes(tmp_path, seed: int) -> list[str]:
    h = start_emulator("openai", 0, 0, log=tmp_path / f"s{seed}.jsonl", fail_rate=0.5, seed=seed)
    try:
        for i in range(30):
            stream(h.port, 4, str(i))
    finally:
        h.stop()
    return [r["outcome"] for r in sorted(h.records(), key=lambda r: r["seq"])]


def test_failure_injection_is_seeded(tmp_path):
    a, b, c = outcomes(tmp_path, 3), outcomes(tmp_path, 3), outcomes(tmp_path, 4)
    assert a == b and a != c
    assert {"ok", "error", "abort"} <= set(a)
