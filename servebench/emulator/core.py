"""The emulator's clock: token deadlines, failure injection, the request log.

One heap of (deadline_ns, seq, stream) for every live stream and ONE loop timer armed for the
earliest deadline. A timer per token per stream would cost a TimerHandle and a heap push inside
the event loop anyway; doing it here lets a single wake-up serve every stream that is due.

Deadlines are absolute: token i of a stream is due at start + TTFT + i*ITL (plus seeded
jitter that does not accumulate), so a late wake-up delays one token, never the rest.
A token is never written before its deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import json
import random
from collections import deque
from dataclasses import dataclass, field
from heapq import heappop, heappush
from time import perf_counter_ns
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servebench.emulator import faults as _faults
from servebench.emulator.formats import FORMATS, Gen
from servebench.errors import first_line

# Token writes per event-loop turn. Requests are stamped on arrival in data_received, which
# only runs between turns: 500 streams due at once would otherwise hold arrivals for ~5 ms.
WRITES_PER_TURN = 32

FormatName = Literal["openai", "openai-chat", "tgi", "lightllm", "sglang"]


class EmulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: FormatName = "openai"
    ttft_ms: float = Field(50.0, ge=0)
    itl_ms: float = Field(10.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)  # each deadline delayed by U(0, jitter), not accumulated
    fail_rate: float = Field(0.0, ge=0, le=1)
    fail_mode: Literal["mixed", "error", "abort"] = "mixed"
    batch_slowdown: float = Field(0.0, ge=0)  # ITL *= 1 + F * (running - 1)
    max_running: int | None = Field(None, ge=1)  # beyond this, requests wait (vllm:num_requests_waiting)
    # beyond this many in flight (running + waiting), 429 "Model is overloaded", as TGI's router
    max_concurrent_requests: int | None = Field(None, ge=1)
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    log: str | None = None  # JSONL request log; None: keep no log
    flush_s: float = Field(1.0, gt=0)
    model: str = "emulator"
    tokenizer: str | None = None  # tokenizer.json (or its directory) to count prompt tokens; else words
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    faults: list[str] = Field(default_factory=list)  # emulator.faults specs, e.g. "kill-after=3s"

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, v: list[str]) -> list[str]:
        _faults.parse(v)  # ValueError (one line) names the bad spec
        return v


@dataclass(slots=True, eq=False)  # identity semantics: streams live in a set
class Stream:
    conn: Any  # server.Conn: begin_stream, write, send_whole, send_error, end_stream, abort_stream
    gen: Gen
    seq: int
    arrival_ns: int
    start_ns: int = 0
    nominal_ns: int = 0  # deadline without jitter; jitter never feeds back into it
    deadline_ns: int = 0
    i: int = 0  # tokens emitted so far
    fail_at: int = -1  # abort after this many tokens (-1: never)
    reset: bool = False  # at fail_at: a TCP reset instead of a clean close (fault reset)
    rng: random.Random | None = None
    dead: bool = False
    token_ns: list[int] = field(default_factory=list)


class Emulator:
    def __init__(self, cfg: EmulatorConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.fmt = FORMATS[cfg.format]
        self.loop = loop
        self.ceil_ms = type(loop).__module__.startswith("uvloop")
        self.ttft_ns = int(cfg.ttft_ms * 1e6)
        self.itl_ns = int(cfg.itl_ms * 1e6)
        self.jitter_ns = int(cfg.jitter_ms * 1e6)
        self.heap: list[tuple[int, int, Stream]] = []
        self.tick = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0
        self.seq = itertools.count()
        self.running: set[Stream] = set()
        self.waiting: deque[Stream] = deque()
        self.n_ok = self.n_failed = self.gen_tokens = self.prompt_tokens = 0
        self.cache_resets = 0  # POST /reset_prefix_cache or /flush_cache, as vLLM / SGLang take it
        self.count = _counter(cfg.tokenizer)
        self.pending: list[str] = []
        self.faults = _faults.parse(cfg.faults)
        self.admitted = 0
        self.tokens_written = 0  # all streams (fault hang-after=N)
        self.hang_tokens = self.faults.hang_after_tokens  # plain attributes: read once per token
        self.garbage_after = self.faults.garbage_after
        self.hung = False  # fault hang-after: nothing is written any more
        self.on_kill = None  # fault kill-after: set by server.serve (SIGKILL self, or close in a thread)
        self.log: IO[str] | None = open(cfg.log, "w", encoding="utf-8") if cfg.log else None
        if self.log:
            from servebench.emulator.sock import SO_TIMESTAMPNS
            clock = "kernel receive timestamp" if SO_TIMESTAMPNS is not None else "read time"
            self.log.write(json.dumps({"kind": "config", **cfg.model_dump(), "arrival_clock": clock}) + "\n")
            self.log.flush()
            self.flusher = loop.call_later(cfg.flush_s, self._flush_tick)

    # -- requests in
    def next_seq(self) -> int:
        return next(self.seq)

    def admit(self, conn: Any, gen: Gen, seq: int, arrival_ns: int) -> Stream | None:
        """A parsed generation request. Returns None when it was failed up front (500 sent)."""
        s = Stream(conn, gen, seq, arrival_ns)
        cfg, f = self.cfg, self.faults
        if self.jitter_ns or cfg.fail_rate or f.random:
            s.rng = random.Random(cfg.seed * 1_000_003 + seq)
        self.admitted += 1
        if self.admitted == 1 and f.timed:
            if f.kill_after_s is not None:
                self.loop.call_later(f.kill_after_s, self._kill)
            if f.hang_after_s is not None:
                self.loop.call_later(f.hang_after_s, self._hang)
        if f.kill_after_requests is not None and self.admitted > f.kill_after_requests:
            self._kill()
        cap = cfg.max_concurrent_requests
        if cap is not None and len(self.running) + len(self.waiting) >= cap:  # refused at the door, as TGI's
            conn.send_error(429, "Model is overloaded")  # router does: before its prompt is counted
            self._done(s, "status_429", perf_counter_ns(), 429)
            return None
        self.prompt_tokens += gen.prompt_tokens
        if f.status_rate and s.rng.random() < f.status_rate:
            conn.send_error(f.status, "emulated fault: server overloaded")
            self._done(s, f"status_{f.status}", perf_counter_ns(), f.status)
            return None
        if f.reset_rate and s.rng.random() < f.reset_rate:
            s.fail_at, s.reset = s.rng.randint(1, max(1, gen.max_tokens - 1)), True
        if cfg.fail_rate and s.rng.random() < cfg.fail_rate:
            n = gen.max_tokens
            mode = cfg.fail_mode if cfg.fail_mode != "mixed" else ("error" if s.rng.random() < 0.5 else "abort")
            if mode == "abort" and n >= 2:
                s.fail_at = s.rng.randint(1, n - 1)
            else:
                conn.send_error(500, "emulated failure")
                self._done(s, "error", perf_counter_ns(), 500)
                return None
        if f.slow_headers_s:  # the head, and generation, only after the delay
            self.loop.call_later(f.slow_headers_s, self._begin, s)
            return s
        self._begin(s, arrival_ns)
        return s

    def _begin(self, s: Stream, now: int | None = None) -> None:
        if s.dead:  # the client gave up while the head was held back
            return
        if s.gen.stream:
            s.conn.begin_stream()
        now = now or perf_counter_ns()
        if self.cfg.max_running is not None and len(self.running) >= self.cfg.max_running:
            self.waiting.append(s)
        else:
            self._start(s, now)

    # -- faults
    def _kill(self) -> None:
        self.flush()  # the log keeps what was served up to the kill
        if self.on_kill is not None:
            self.on_kill()

    def _hang(self) -> None:
        self.hung = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _start(self, s: Stream, now: int) -> None:
        self.running.add(s)
        s.start_ns = now
        s.nominal_ns = now + self.ttft_ns
        d = s.nominal_ns + (int(s.rng.random() * self.jitter_ns) if self.jitter_ns else 0)
        s.deadline_ns = d
        heappush(self.heap, (d, next(self.tick), s))
        if self.timer is None or d < self.timer_at:
            self._arm(d)

    def _arm(self, at_ns: int) -> None:
        if self.hung:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at_ns
        delay = max(0.0, (at_ns - perf_counter_ns()) * 1e-9)
        if self.ceil_ms:
            delay = math.ceil(delay * 1e3) * 1e-3
        self.timer = self.loop.call_later(delay, self._fire)

    # -- the hot loop
    def _fire(self) -> None:
        self.timer = None
        if self.hung:
            return
        heap = self.heap
        now = perf_counter_ns()
        budget = WRITES_PER_TURN
        while heap and heap[0][0] <= now:
            budget -= 1
            if budget < 0:  # let the loop stamp arrivals before writing more (see WRITES_PER_TURN)
                self.timer = self.loop.call_soon(self._fire)
                self.timer_at = now
                return
            s = heappop(heap)[2]
            if not s.dead:
                self._emit(s, now)
                if self.hung:
                    return
            now = perf_counter_ns()
        if heap:
            self._arm(heap[0][0])

    def _emit(self, s: Stream, now: int) -> None:
        """Write every token of `s` due by `now` in ONE write: normally one token, but a loop
        that fell behind catches up with one send per stream instead of one per token (which
        is what made it fall behind). Tokens written together are logged with the same time."""
        g, fmt = s.gen, self.fmt
        parts: list[bytes] = []
        n = 0
        while True:
            i = s.i
            last = i == g.max_tokens - 1
            if g.stream:
                data = fmt.token(g, i)
                parts.append(b"%x\r\n%b\r\n" % (len(data), data))
                if i + 1 == self.garbage_after and not last:
                    parts.append(b"%x\r\n%b\r\n" % (len(self.faults.garbage), self.faults.garbage))
                if last:
                    tail = fmt.tail(g)
                    if tail:
                        parts.append(b"%x\r\n%b\r\n" % (len(tail), tail))
                    parts.append(b"0\r\n\r\n")
            s.i = i = i + 1
            n += 1
            if last or i == s.fail_at:
                break
            if self.hang_tokens is not None and self.tokens_written + n >= self.hang_tokens:
                break  # hangs below: the stream is never scheduled again
            d = self._next_deadline(s)
            if d > now:
                heappush(self.heap, (d, next(self.tick), s))
                break
        t = perf_counter_ns()
        self.tokens_written += n
        if g.stream:
            s.conn.write(parts[0] if len(parts) == 1 else b"".join(parts))
            if n == 1:
                s.token_ns.append(t)
            else:
                s.token_ns.extend([t] * n)
        if last:
            if not g.stream:
                g.extra.update(total_ms=(t - s.arrival_ns) / 1e6, queue_ms=(s.start_ns - s.arrival_ns) / 1e6,
                               inference_ms=(t - s.start_ns) / 1e6)
                t = perf_counter_ns()
                s.conn.send_whole(*fmt.whole(g))
            self._done(s, "ok", t, 200)
            s.conn.end_stream()
        elif i == s.fail_at:
            self._done(s, "reset" if s.reset else "abort", t, 200)
            s.conn.reset_stream() if s.reset else s.conn.abort_stream()
        if self.hang_tokens is not None and self.tokens_written >= self.hang_tokens:
            self._hang()

    def _next_deadline(self, s: Stream) -> int:
        itl = self.itl_ns
        if self.cfg.batch_slowdown:
            itl = int(itl * (1 + self.cfg.batch_slowdown * (len(self.running) - 1)))
        s.nominal_ns += itl
        d = s.nominal_ns
        if self.jitter_ns:
            d = max(d + int(s.rng.random() * self.jitter_ns), s.deadline_ns)
        s.deadline_ns = d
        return d

    # -- requests out
    def client_gone(self, s: Stream) -> None:
        if not s.dead:
            self._done(s, "client_closed", perf_counter_ns(), 200)

    def _done(self, s: Stream, outcome: str, end_ns: int, status: int) -> None:
        s.dead = True
        if s in self.running:
            self.running.discard(s)
            if self.waiting:
                self._start(self.waiting.popleft(), end_ns)
        elif s in self.waiting:
            self.waiting.remove(s)
        if outcome == "ok":
            self.n_ok += 1
        else:
            self.n_failed += 1
        self.gen_tokens += s.i
        if self.log is not None:
            g = s.gen
            self.pending.append(json.dumps({
                "kind": "request", "id": g.rid, "seq": s.seq, "path": g.path, "stream": g.stream,
                "prompt_tokens": g.prompt_tokens, "prompt_chars": g.prompt_chars,
                "max_tokens": g.max_tokens, "arrival_ns": s.arrival_ns, "start_ns": s.start_ns,
                "token_ns": s.token_ns, "end_ns": end_ns, "status": status, "outcome": outcome,
            }, separators=(",", ":")))

    def _flush_tick(self) -> None:
        self.flush()
        self.flusher = self.loop.call_later(self.cfg.flush_s, self._flush_tick)

    def flush(self) -> None:
        if self.log is not None and self.pending:
            self.log.write("\n".join(self.pending) + "\n")
            self.log.flush()
            self.pending.clear()

    def close(self) -> None:
        """Shutdown: streams still live are logged as such, then the log is closed."""
        now = perf_counter_ns()
        for s in list(self.running) + list(self.waiting):
            self._done(s, "shutdown", now, 200)
        if self.timer is not None:
            self.timer.cancel()
        if self.log is not None:
            self.flusher.cancel()
            self.flush()
            self.log.close()
            self.log = None

    def metrics(self) -> bytes:
        m = json.dumps(self.cfg.model)
        rows = [
            ("vllm:num_requests_running", "gauge", len(self.running)),
            ("vllm:num_requests_waiting", "gauge", len(self.waiting)),
            ("vllm:request_success_total", "counter", self.n_ok),
            ("vllm:request_failure_total", "counter", self.n_failed),
            ("vllm:generation_tokens_total", "counter", self.gen_tokens),
            ("vllm:prompt_tokens_total", "counter", self.prompt_tokens),
            ("servebench_emulator_cache_resets_total", "counter", self.cache_resets),
        ]
        out = []
        for name, kind, v in rows:
            out.append(f"# TYPE {name} {kind}\n{name}{{model_name={m}}} {float(v)}\n")
        return "".join(out).encode()


def _counter(tokenizer: str | None):
    if not tokenizer:
        from servebench.emulator.formats import count_words
        return count_words
    from pathlib import Path

    from tokenizers import Tokenizer
    p = Path(tokenizer)
    p = p / "tokenizer.json" if p.is_dir() else p
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception for a missing or bad file
        raise ValueError(f"cannot load tokenizer {p}: {first_line(e)}") from None
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
