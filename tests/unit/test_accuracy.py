"""servebench's TTFT / e2e / ITL against the emulator's log of when it really received each
request and wrote each token (same CLOCK_MONOTONIC in both processes).

Timing on a shared 2-core host is noisy, and noise only ever ADDS error, so each check takes
the best of several attempts: a client with a systematic bias (stamping before connecting)
fails all of them, while a correct client needs only one quiet attempt. The deliberately bad
client below shows the tolerances have teeth.
"""

from __future__ import annotations

import itertools
import time
from time import perf_counter_ns

import pytest

from servebench.adapters.base import Request
from servebench.run.calibrate import compare, run_plan
from servebench.emulator import start_emulator
from servebench.transport.http import HttpTransport

TTFT_MS, ITL_MS, TOKENS = 20.0, 5.0, 16
# median TTFT / e2e error allowed, per load shape (ms); ITL: |median gap error|
TOL = {"c1": 0.25, "c20": 0.4, "burst50": 1.0}
TOL_ITL_MS = 0.2
# arrival (kernel receive stamp) - sent_ns: only the write syscall lies between them for a
# client that stamps right before writing, whatever the load; stamping before connecting or
# serializing puts that work here
TOL_SEND_MS = 0.03  # measured: good client 0.002-0.01 ms; connect-after-stamp 0.07 ms and up
SHAPES = {"c1": (10, 1), "c20": (60, 20), "burst50": (50, None)}
ids = itertools.count(0, 1000)


@pytest.fixture(scope="module")
def emu():
    with start_emulator("openai", TTFT_MS, ITL_MS, flush_s=0.05) as h:
        yield h


class StampFirstClient:
    """Deliberately wrong, in the order aiohttp-based clients (vllm bench serve) work: take the
    start stamp, then serialize the request and open a connection, then write."""

    def __init__(self, url: str) -> None:
        self.inner = HttpTransport(url)

    async def send(self, req: Request, rec) -> None:
        t = perf_counter_ns()
        wire = self.inner.encode(Request(req.method, req.path, req.body, req.headers + (("Connection", "close"),)),
                                 rec.index)
        await self.inner.send(wire, rec)
        rec.sent_ns = t

    async def close(self) -> None:
        await self.inner.close()


def measure(h, shape: str, bad: bool = False, workers: int = 1) -> dict:
    n, conc = SHAPES[shape]
    base = next(ids)
    recs = run_plan(h.url, n, concurrency=conc, output_tokens=TOKENS, id_base=base, workers=workers,
                    transport=StampFirstClient(h.url) if bad else None)
    assert all(r.ok for r in recs), [r.error for r in recs if not r.ok][:3]
    want = {str(base + i) for i in range(n)}
    deadline = time.monotonic() + 10
    while True:  # the emulator flushes its log every 50 ms
        log = [r for r in h.records() if r["id"] in want]
        if len(log) == n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    acc = compare(recs, log)
    assert acc["matched"] == n
    # causality holds on every attempt, quiet or not: sent <= arrival, write <= read
    assert acc["causality_violations"] == 0
    return acc


def within(acc: dict, shape: str) -> bool:
    return (acc["ttft_err_ms"]["p50"] < TOL[shape] and acc["e2e_err_ms"]["p50"] < TOL[shape] + 0.5
            and abs(acc["itl_err_ms"]["p50"]) < TOL_ITL_MS and acc["send_lag_ms"]["p50"] < TOL_SEND_MS)


def attempts(h, shape: str, **kw) -> list[dict]:
    """Up to 5 attempts, stopping at the first within tolerance: the same rule for every client."""
    runs = []
    for _ in range(5):
        runs.append(measure(h, shape, **kw))
        if within(runs[-1], shape):
            break
    return runs


def brief(runs: list[dict]) -> str:
    return "; ".join(f"TTFT {r['ttft_err_ms']['p50']:.3f} e2e {r['e2e_err_ms']['p50']:.3f} "
                     f"ITL {r['itl_err_ms']['p50']:.3f} send {r['send_lag_ms']['p50']:.3f} ms" for r in runs)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_ttft_e2e_and_itl_match_the_emulator(emu, shape):
    runs = attempts(emu, shape)
    assert within(runs[-1], shape), f"p50 errors per attempt: {brief(runs)}"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_client_that_stamps_before_connecting_fails_the_tolerance(emu, shape):
    # Its TTFT error alone is not always enough: at 1 and 20 streams a fresh loopback connection
    # costs as little as 0.07-0.3 ms, and it has measured 0.22-0.24 ms TTFT error, inside the
    # tolerance. Its send lag is not: the good client's is the write syscall (~5 us).
    runs = attempts(emu, shape, bad=True)
    assert not within(runs[-1], shape), f"the bad client passed: {brief(runs)}"
    # and on every attempt the error shows where the bad client puts it: on the sending side
    assert all(r["send_lag_ms"]["p50"] > TOL_SEND_MS for r in runs), brief(runs)


def test_two_workers_keep_the_burst_accurate(emu):
    runs = attempts(emu, "burst50", workers=2)
    assert within(runs[-1], "burst50"), f"p50 errors per attempt: {brief(runs)}"
