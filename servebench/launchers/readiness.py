"""Shared launch helpers: free ports, log tails, secret redaction, and readiness.

Ready means the server answered one real generation request, not merely that its health
route said 200: several engines report healthy before the model is loaded or compiled, and
the first request would then carry that warm-up into the measurement.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from servebench.errors import folded
from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.engines.specs import EngineSpec, SpecError, load_spec

PROBE_PROMPT = "Hello"
PROBE_TOKENS = 2


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just handed out. Racy by nature (someone may take it before the server
    binds it), but the server then fails to bind and readiness reports its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, lines: int = 10, width: int = 300) -> str:
    """The last lines of a log joined into one line, for a one-line error."""
    if path is None or not Path(path).is_file():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64 * 1024))
        tail = deque((ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()), lines)
    return " | ".join(ln[:width] for ln in tail) or "(log empty)"


def is_secret(name: str) -> bool:
    """The run files' own rule (HF_TOKEN yes; MAX_TOTAL_TOKENS, a limit to see and reproduce, no)."""
    from servebench.store.redact import secret_name

    return secret_name(name)


def redact_env(env: dict[str, str]) -> dict[str, str]:
    """What may be written to run.json: values of secret-looking names never are."""
    return {k: ("<redacted>" if is_secret(k) else v) for k, v in sorted(env.items())}


def log_dir(req: LaunchRequest, engine: str) -> Path:
    """Where server.log goes: the run dir, or a fresh temp dir (never the caller's cwd)."""
    d = Path(req.run_dir) if req.run_dir else Path(tempfile.mkdtemp(prefix=f"servebench-{engine}-"))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way, a read-only disk: before anything starts
        raise LaunchError(f"cannot make the server's log dir {d}: {e.strerror or e}") from None
    return d


def served_name(req: LaunchRequest) -> str:
    """The model name the API expects: an explicit served name, else what was launched."""
    return req.options.get("served_model_name") or req.model


@dataclass(slots=True)
class Opening:
    """What a local launcher knows before it starts anything."""

    spec: EngineSpec
    port: int
    plan: Any  # the launcher's own: docker run's kwargs, the engine's argv
    log_path: Path
    adapter: str


def opening(req: LaunchRequest, host: str, plan: Callable[[EngineSpec, LaunchRequest, int], Any]) -> Opening:
    """The start of every local launcher's start(): the spec, a port, the launcher's plan (a spec
    error is a LaunchError, before anything runs), where server.log goes, the adapter."""
    try:
        spec = load_spec(req.engine)
        port = req.port or free_port(host)
        planned = plan(spec, req, port)
    except SpecError as e:
        raise LaunchError(str(e)) from None
    return Opening(spec, port, planned, log_dir(req, spec.name) / "server.log",
                   req.options.get("adapter") or spec.adapter)


def probe_generation(
    spec: EngineSpec, base_url: str, adapter_name: str, model: str, timeout_s: float,
    client: httpx.Client | None = None,
) -> None:
    """One real request through the adapter the run will use; LaunchError unless it is 2xx."""
    from servebench.adapters import ADAPTERS  # lazy: launchers must import without adapters

    if adapter_name not in ADAPTERS:
        raise LaunchError(f"unknown adapter {adapter_name!r} (known: {', '.join(sorted(ADAPTERS))})")
    req = ADAPTERS[adapter_name].build(PROBE_PROMPT, PROBE_TOKENS, model=model)
    what = f"{spec.name}: first generation request to {req.path}"
    own = client is None
    client = client or httpx.Client()
    try:
        r = client.request(req.method, base_url + req.path, content=req.body, headers=dict(req.headers),
                           timeout=max(timeout_s, 1.0))
        body = r.read()
    except httpx.TimeoutException:
        raise LaunchError(f"{what} timed out after {timeout_s:.0f}s") from None
    except httpx.HTTPError as e:
        raise LaunchError(f"{what} failed: {folded(e) or type(e).__name__}") from None
    finally:
        if own:
            client.close()
    if r.status_code in (400, 422):
        # a server that rejects a field servebench added (ignore_eos, ...) still generates: the
        # run's own probe (servebench.transport.probe) drops the field and records it; here, ready is enough
        from servebench.transport.probe import http_send, negotiate

        neg = negotiate(http_send(base_url, max(timeout_s, 1.0), None if own else client),
                        lambda x: ADAPTERS[adapter_name].build(PROBE_PROMPT, PROBE_TOKENS, model=model, extra=x), None)
        if neg.dropped and neg.error is None:
            return
    if not 200 <= r.status_code < 300:
        raise LaunchError(f"{what} got HTTP {r.status_code}: "
                          f"{folded(body.decode('utf-8', 'replace'), 200)}")


def wait_ready(
    spec: EngineSpec,
    base_url: str,
    *,
    adapter: str,
    model: str,
    timeout_s: float,
    exited: Callable[[], str | None],
    tail: Callable[[], str],
    poll_s: float = 0.5,
) -> float:
    """Poll the health path until 200, then probe one generation. `exited()` returns None while
    the server runs, else how it ended ("exited with code 1"). Returns seconds to ready."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    url = base_url + spec.health_path
    last = "no answer yet"
    with httpx.Client() as client:
        while True:
            gone = exited()
            if gone is not None:
                raise LaunchError(f"{spec.name} {gone} during start-up; last log lines: {tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LaunchError(f"{spec.name} not healthy after {timeout_s:.0f}s (phase start-up: weights download "
                                  f"and load; raise --ready-timeout or launcher option ready_timeout_s) ({url}: {last}); "
                                  f"last log lines: {tail()}")
            try:
                r = client.get(url, timeout=min(2.0, max(left, 0.1)))
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
        try:
            probe_generation(spec, base_url, adapter, model, max(deadline - time.monotonic(), 5.0), client)
        except LaunchError as e:
            gone = exited()
            where = f" ({spec.name} {gone})" if gone else ""
            raise LaunchError(f"{e}{where}; last log lines: {tail()}") from None
    return time.monotonic() - t0
