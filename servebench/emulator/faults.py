"""Server faults the emulator can act out, so every fault path of a run is tested for real.

`servebench emulate --fault SPEC` (repeatable):

  kill-after=3s      the process kills itself (SIGKILL) 3 s after the first generation request
  kill-after=5       ... when generation request 6 arrives (5 were accepted)
  hang-after=20      after 20 tokens in all, no byte is written again; connections stay open
  hang-after=2s      ... 2 s after the first generation request
  status=503:0.3     30 % of generation requests answered with HTTP 503 (fraction default 1)
  reset:0.1          10 % of streams reset (TCP RST) after a random number of tokens
  garbage-after=5    after the 5th token of every stream, one malformed event, then the rest
  garbage-after=5:deep   ... the event is JSON nested 100,000 deep (Python's json cannot parse it)
  garbage-after=5:12MB   ... the event is one `data:` line of 12 MB (also KB; the client's caps)
  slow-headers=2s    the response head (and generation) starts 2 s after each request

Durations take `s` or `ms`; a bare number is a count.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

GARBAGE = b'data: {"malformed event\n\n'  # not JSON: a parser must flag it, not count it
DEEP = b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"  # RecursionError in json.loads
_SIZE = re.compile(r"^(\d+)(KB|MB)$")

_DUR = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")


class Faults(BaseModel):
    model_config = ConfigDict(frozen=True)

    kill_after_s: float | None = None
    kill_after_requests: int | None = None
    hang_after_s: float | None = None
    hang_after_tokens: int | None = None
    status: int | None = None
    status_rate: float = 0.0
    reset_rate: float = 0.0
    garbage_after: int | None = None
    garbage: bytes = GARBAGE  # the event garbage-after sends
    slow_headers_s: float | None = None

    @property
    def random(self) -> bool:  # does any fault draw per request?
        return bool(self.status_rate or self.reset_rate)

    @property
    def timed(self) -> bool:  # does any fault start a clock at the first request?
        return self.kill_after_s is not None or self.hang_after_s is not None


def _duration_or_count(name: str, v: str) -> tuple[float | None, int | None]:
    m = _DUR.match(v.strip())
    if m:
        return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1), None
    if v.strip().isdigit():
        return None, int(v)
    raise ValueError(f"fault {name}={v!r}: expected a duration (3s, 500ms) or a count")


def _fraction(name: str, v: str | None) -> float:
    if v is None or v == "":
        return 1.0
    try:
        f = float(v)
    except ValueError:
        f = -1.0
    if not 0 < f <= 1:
        raise ValueError(f"fault {name}: fraction {v!r} must be in (0, 1]")
    return f


def _garbage(kind: str) -> bytes:
    if not kind:
        return GARBAGE
    if kind == "deep":
        return DEEP
    m = _SIZE.match(kind)
    if not m:
        raise ValueError(f"fault garbage-after=N:{kind}: expected deep or a size (12MB, 64KB)")
    return b"data: " + b"x" * (int(m[1]) * (2**20 if m[2] == "MB" else 1024)) + b"\n\n"


def parse(specs: list[str]) -> Faults:
    """Faults from `--fault` strings; ValueError (one line) on anything else."""
    out: dict = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            name, _, value = spec.partition(":")
        name = name.strip()
        if name == "kill-after" and sep:
            out["kill_after_s"], out["kill_after_requests"] = _duration_or_count(name, value)
        elif name == "hang-after" and sep:
            out["hang_after_s"], out["hang_after_tokens"] = _duration_or_count(name, value)
        elif name == "status" and sep:
            code, _, frac = value.partition(":")
            if not code.isdigit() or not 400 <= int(code) <= 599:
                raise ValueError(f"fault status={value!r}: expected an HTTP error status 400-599, e.g. status=503:0.3")
            out["status"], out["status_rate"] = int(code), _fraction("status", frac)
        elif name == "reset" and not sep:
            out["reset_rate"] = _fraction("reset", value)
        elif name == "garbage-after" and sep:
            count, _, kind = value.partition(":")
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"fault garbage-after={value!r}: expected a token count >= 1")
            out["garbage_after"], out["garbage"] = int(count), _garbage(kind.strip())
        elif name == "slow-headers" and sep:
            secs, count = _duration_or_count(name, value)
            if secs is None:
                raise ValueError(f"fault slow-headers={value!r}: expected a duration, e.g. 2s")
            out["slow_headers_s"] = secs
        else:
            raise ValueError(
                f"unknown fault {spec!r} (known: kill-after=3s|N, hang-after=N|2s, status=503:0.3, "
                "reset:0.1, garbage-after=N[:deep|:12MB], slow-headers=2s)"
            )
    return Faults(**out)
