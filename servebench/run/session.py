"""A server session: launch (or attach) -> ready -> any number of measurements -> teardown.

`run` opens one session for one measurement; `compare` and `sweep` open one per server
configuration and measure every load point against it, so an engine that takes a minute to
start is started once. Teardown always happens (errors, Ctrl-C, a second Ctrl-C).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from servebench.config import RunConfig
from servebench.launchers import LAUNCHERS, LaunchRequest
from servebench.launchers.dryrun import request_of
from servebench.launchers.base import Server
from servebench.run import frontdoor
from servebench.signals import shielded
from servebench.engines.specs import EngineSpec


class ServerSession:
    """One server for as long as the session is open. Not re-entrant; close() is idempotent."""

    def __init__(self, cfg: RunConfig, spec: EngineSpec, api: str, model_dir: Path | None, log_dir: Path,
                 launcher: Any = None, in_flight: int | None = None) -> None:
        self.cfg, self.spec, self.api, self.model_dir, self.log_dir = cfg, spec, api, model_dir, Path(log_dir)
        # the most requests the loads measured on this server can have in flight (run.frontdoor)
        self.in_flight = in_flight
        self.front_door: dict | None = None  # the cap a launch raised, for run.json
        self.launcher = launcher or LAUNCHERS[cfg.launcher]()
        self.server: Server | None = None
        self.engine_version: str | None = None
        self.served: str = cfg.served_model_name or cfg.model
        self.launch_s: float | None = None  # start -> ready, as the sweep's overhead counts it
        self.teardown_s: float | None = None
        self.cache_resets: list[dict] = []

    def open(self, phase: Callable[[str], None] = lambda m: None) -> Server:
        cfg = self.cfg
        phase(f"starting {cfg.backend} ({cfg.launcher})" if cfg.launcher != "external" else "checking endpoint")
        t0 = time.perf_counter()
        self.server = self.launcher.start(self._request())
        self.launch_s = time.perf_counter() - t0
        self.engine_version = _engine_version(self.server.base_url)  # asked now: gone after teardown
        served = cfg.served_model_name or self.server.info.get("served_model_name") or cfg.model
        if cfg.launcher == "external":
            served = cfg.served_model_name or _served_model(self.server.base_url) or served
        self.served = served
        return self.server

    def close(self) -> None:
        if self.teardown_s is not None:
            return
        t0 = time.perf_counter()
        with shielded():
            self.launcher.stop()
        self.teardown_s = time.perf_counter() - t0

    def __enter__(self) -> "ServerSession":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exited(self) -> str | None:
        """How a launched server ended on its own ("was killed by signal 9"), else None."""
        probe = getattr(self.launcher, "_exited", None)  # process and docker launchers know
        return probe() if callable(probe) and self.server is not None else None

    def alive(self) -> bool:
        """Still serving: the launched process has not exited and health answers."""
        if self.server is None or self.teardown_s is not None:
            return False
        if self.exited():
            return False
        if not self.server.base_url.startswith("http"):
            return True
        import httpx

        try:
            return httpx.get(self.server.base_url + self.spec.health_path, timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def reset_cache(self) -> dict:
        """Empty the engine's prefix cache where it has a route for it, so a reused server
        never serves a prefix cached by an earlier load point. Returns what happened."""
        path = self.spec.cache_reset_path
        if not path or self.server is None or not self.server.base_url.startswith("http"):
            out = {"reset": False, "reason": "engine has no cache-reset route" if not path else "not an HTTP server"}
        else:
            import httpx

            try:
                r = httpx.post(self.server.base_url + path, timeout=30.0)
                out = {"reset": r.status_code == 200, "route": path, "status": r.status_code}
            except httpx.HTTPError as e:
                out = {"reset": False, "route": path, "reason": type(e).__name__}
        self.cache_resets.append(out)
        return out

    def _request(self) -> LaunchRequest:
        cfg = self.cfg
        cap = frontdoor.launch_cap(self.spec, cfg, self.in_flight) if self.in_flight else None
        if cap is not None:
            self.front_door = {"raised_to": cap, "default": self.spec.front_door.default, "why": "most in flight"}
        req = request_of(cfg, {"adapter": self.api, **({"max_concurrent_requests": cap} if cap is not None else {})})
        req.model, req.run_dir = str(self.model_dir or cfg.model), self.log_dir
        return req


def _get_json(url: str) -> Any:
    import httpx

    try:
        r = httpx.get(url, timeout=3.0)
        return r.json() if r.status_code == 200 else None
    except Exception:
        return None


def _engine_version(base_url: str) -> str | None:
    if not base_url.startswith("http"):
        return None
    for path in ("/version", "/info"):  # vLLM/SGLang: /version; TGI, LightLLM: /info
        data = _get_json(base_url.rstrip("/") + path)
        if isinstance(data, dict) and data.get("version"):
            return str(data["version"])
    return None


def _served_model(base_url: str) -> str | None:
    data = _get_json(base_url.rstrip("/") + "/v1/models")
    try:
        return data["data"][0]["id"]
    except (TypeError, KeyError, IndexError):
        return None
