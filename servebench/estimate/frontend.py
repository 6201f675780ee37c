"""The server's frontend as one serial worker in front of the engine (issue 19, this host's vLLM CPU runs).

vLLM's API server is one asyncio loop in one process: it parses each request's HTTP, validates
and tokenises the prompt and hands it to the engine core, interleaving every request's
coroutine; on a small CPU host that process also shares the cores with the engine core and the
benchmark client. So the per-request work before the engine is done by one worker shared by
every request that is in it at the same time (processor sharing), and requests that arrive
together (a burst, or a closed loop of fixed lengths, which stays in waves) each finish it only
when all of them have: a wave of n requests waits n x `fe_ms`, a lone request `fe_ms`. The
engine sees a request `req_ms` after its frontend work ends (latency that occupies nothing).

`fe_ms` is 0 for published rows (their TTFT is the engine's; no source separates the frontend)
and fitted only on the user's runs (`--calibrate`); at 0 the simulator uses `Lag`, a plain latency.
The per-token share of that worker (detokenising and framing every streamed token) was tried
as a second term and left out: fitted on the runs it stayed at its prior (docs/estimate.md).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class Frontend:
    fe: float  # s of frontend work per request
    lag: float  # s after its frontend work before the engine sees a request
    now: float = 0.0  # how far the worker has been advanced
    jobs: list = field(default_factory=list)  # heap (sent, seq, req): not reached the worker yet
    busy: list = field(default_factory=list)  # [work left s, seq, req], sharing the worker
    ready: list = field(default_factory=list)  # heap (engine arrival, seq, req)
    seq: int = 0

    def send(self, t: float, req) -> None:
        """A client sends a request at t."""
        heapq.heappush(self.jobs, (t, self.seq, req))
        self.seq += 1

    def _next_done(self) -> float:
        return self.now + min(j[0] for j in self.busy) * len(self.busy) if self.busy else math.inf

    def run(self, until: float) -> None:
        """Advance the worker to `until` (finite), finishing and taking in jobs in time order."""
        while True:
            sent = self.jobs[0][0] if self.jobs else math.inf
            done = self._next_done()
            if min(sent, done) > until:
                self._advance(until)
                return
            if done <= sent:
                # the smallest job(s) end now: closed explicitly, since a remainder that is
                # float residue may not move a large clock at all
                least = min(j[0] for j in self.busy)
                ending = [j for j in self.busy if j[0] <= least * (1 + 1e-9)]
                self._advance(done)
                for j in ending:
                    self.busy.remove(j)
                    heapq.heappush(self.ready, (self.now + self.lag, j[1], j[2]))
                continue
            self._advance(sent)
            t, seq, req = heapq.heappop(self.jobs)
            self.busy.append([self.fe, seq, req])

    def _advance(self, t: float) -> None:
        if t > self.now and self.busy:
            share = (t - self.now) / len(self.busy)
            for j in self.busy:
                j[0] -= share
        self.now = max(self.now, t)

    def arrived(self, now: float) -> list:
        """Requests the engine has received by `now`, in the order they got there."""
        return _pop_until(self.ready, now)

    def next_time(self) -> float | None:
        """With the engine idle, when something next happens: a request reaching it, else the
        worker finishing a job, else a job reaching the worker."""
        if self.ready:
            return self.ready[0][0]
        t = min(self._next_done(), self.jobs[0][0] if self.jobs else math.inf)
        return None if t == math.inf else t


@dataclass(slots=True)
class Lag:
    """The gate with no frontend work: the engine sees a request `lag` after it was sent, in the
    order sent (Frontend's interface, so the simulator has one loop)."""
    lag: float
    ready: list = field(default_factory=list)  # heap (engine arrival, seq, req)
    seq: int = 0

    def send(self, t: float, req) -> None:
        heapq.heappush(self.ready, (t + self.lag, self.seq, req))
        self.seq += 1

    def run(self, until: float) -> None:
        """Nothing to advance: no shared work."""

    def arrived(self, now: float) -> list:
        return _pop_until(self.ready, now)

    def next_time(self) -> float | None:
        return self.ready[0][0] if self.ready else None


def _pop_until(ready: list, now: float) -> list:
    out = []
    while ready and ready[0][0] <= now:
        out.append(heapq.heappop(ready)[2])
    return out
