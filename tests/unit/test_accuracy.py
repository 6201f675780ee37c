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
from servebench.calibrate import compare, run_plan
from servebench.emulator import start_emulator
from servebench.transport.http import HttpTransport

TTFT_MS, ITL_MS, TOKENS = 20.0, 5.0, 16
# median TTFT / e2e error allowed, per load shape (ms); ITL: |median gap error|
TOL = {"c1": 0.5, "c20": 0.8, "burst50": 2.0}
TOL_ITL_MS = 0.2
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


def best_of(h, shape: str, key: str, **kw) -> tuple[float, list[dict]]:
    """A good client stops at its first attempt within tolerance (up to 5); a bad one gets 3."""
    runs = []
    for _ in range(3 if kw.get("bad") else 5):
        runs.append(measure(h, shape, **kw))
        if runs[-1][key]["p50"] < TOL[shape] and not kw.get("bad"):
            break
    return min(r[key]["p50"] for r in runs), runs


@pytest.mark.parametrize("shape", list(SHAPES))
def test_ttft_and_e2e_match_the_emulator(emu, shape):
    best, runs = best_of(emu, shape, "ttft_err_ms")
    assert best < TOL[shape], f"TTFT error p50 {best:.3f} ms"
    quiet = min(runs, key=lambda r: r["ttft_err_ms"]["p50"])
    assert quiet["e2e_err_ms"]["p50"] < TOL[shape] + 0.5
    assert abs(quiet["itl_err_ms"]["p50"]) < TOL_ITL_MS
    assert quiet["send_lag_ms"]["min"] >= 0 and quiet["recv_lag_ms"]["min"] >= 0


@pytest.mark.parametrize("shape", ["c20", "burst50"])
def test_a_client_that_stamps_before_connecting_fails_the_tolerance(emu, shape):
    best, runs = best_of(emu, shape, "ttft_err_ms", bad=True)
    assert best > TOL[shape], f"the bad client passed: TTFT error p50 {best:.3f} ms"
    # and the error is where the bad client puts it: on the sending side
    assert min(r["send_lag_ms"]["p50"] for r in runs) > TOL[shape] - 0.5


def test_two_workers_keep_the_burst_accurate(emu):
    best, runs = best_of(emu, "burst50", "ttft_err_ms", workers=2)
    assert best < TOL["burst50"], f"TTFT error p50 {best:.3f} ms"
