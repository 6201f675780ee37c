"""An engine's front door against the most requests a load can have in flight.

TGI's router refuses a request with HTTP 429 "Model is overloaded" when --max-concurrent-requests
(128 by default) are already in flight, queued or running. A burst of 1000 against a default TGI
would measure 128 requests and 872 refusals, and a comparison with vLLM (no such cap) would read
it as TGI failing, not as TGI's queue. So a launch raises the cap to the most requests the load
can have in flight (the spec's `front_door`), unless the user set it; against a server servebench
did not launch, GET /info says its cap and a warning says before the load what it will refuse.
"""

from __future__ import annotations

import functools
from typing import Any

from servebench.config import RunConfig
from servebench.engines.specs import EngineSpec


def most_in_flight(cfg: RunConfig) -> int:
    """An upper bound on the requests in flight at once: the closed loop's users (or a rate's
    cap), else every request of the load (a burst; an open loop the server falls behind on).
    Exact in count once the workload is built (a trace or sessions set load.requests); before
    that, a trace's requests are counted from the file."""
    n = cfg.load.requests
    if cfg.workload.trace is not None:
        n = _trace_requests(cfg) or n
    return min(cfg.load.concurrency, n) if cfg.load.concurrency else n


def _trace_requests(cfg: RunConfig) -> int | None:
    t = cfg.workload.trace
    return _count(t.source, t.format, t.columns, t.window, t.requests)


@functools.lru_cache(maxsize=16)  # a sweep asks once per cell and per measurement: read the file once
def _count(source: str, fmt: str | None, columns: str | None, window: tuple | None, requests: int | None) -> int | None:
    from servebench.config import TraceConfig
    from servebench.load import traces
    from servebench.load.workload import slice_trace

    try:
        tr = traces.load_trace(source, fmt, columns)
        return len(slice_trace(tr, TraceConfig(source=source, window=window, requests=requests))[0])
    except (traces.TraceError, OSError, ValueError):
        return None  # the workload build says what is wrong, in one line


def user_set(spec: EngineSpec, cfg: RunConfig) -> bool:
    """The cap was given by the user: the flag in the server args, the launcher option, or the
    container's variable in the env."""
    flag = spec.flags.max_concurrent_requests
    if flag and any(a == flag or a.startswith(flag + "=") for a in cfg.server_args):
        return True
    var = spec.sagemaker.option_env.get("max_concurrent_requests") if spec.sagemaker else None
    return "max_concurrent_requests" in cfg.launcher_options or (var is not None and var in cfg.env)


def launch_cap(spec: EngineSpec, cfg: RunConfig, in_flight: int) -> int | None:
    """The cap a launch passes (launcher option max_concurrent_requests), or None: no front door,
    the default already admits the load, or the user chose."""
    door = spec.front_door
    if door is None or in_flight <= door.default or cfg.launcher == "external" or user_set(spec, cfg):
        return None
    return in_flight


def launch_options(cfg: RunConfig, in_flight: int) -> dict[str, int]:
    """What a launch of `cfg` adds for its front door ({} for most engines), e.g. for
    `sweep --dry-run --show-commands`, so the command shown is the command run."""
    from servebench.engines.specs import SpecError, load_spec

    try:
        spec = load_spec(cfg.backend)
    except SpecError:
        return {}  # the launch says why, in one line
    cap = launch_cap(spec, cfg, in_flight)
    return {} if cap is None else {"max_concurrent_requests": cap}


def server_cap(base_url: str, spec: EngineSpec) -> int | None:
    """The running server's cap as its GET /info reports it; None when it does not say."""
    door = spec.front_door
    if door is None or door.info_key is None or not base_url.startswith("http"):
        return None
    import httpx

    try:
        r = httpx.get(base_url.rstrip("/") + "/info", timeout=5.0)
        value: Any = r.json().get(door.info_key) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def warning(base_url: str, spec: EngineSpec, in_flight: int) -> str | None:
    """One line when the server will refuse part of this load, else None."""
    cap = server_cap(base_url, spec)
    if cap is None or cap >= in_flight:
        return None
    flag = spec.flags.max_concurrent_requests
    return (f"{spec.name} at {base_url} refuses requests past {cap} in flight (its {flag}); this load can have "
            f"{in_flight} in flight, so up to {in_flight - cap} may fail with HTTP 429: start it with {flag} "
            f"{in_flight}, or lower the load")
