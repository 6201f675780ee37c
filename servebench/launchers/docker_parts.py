"""Docker launcher parts with no docker daemon in them: device requests, the equivalent
`docker run` line, and pull progress."""

from __future__ import annotations

import shlex
import time
from typing import Any, Callable

from servebench.launchers.readiness import is_secret


def device_requests(gpus: list[int] | None) -> list[Any]:
    """--gpus 2,3 -> exactly those devices; None -> all GPUs (as the engines' own docs run them);
    [] -> none (a CPU image)."""
    from docker.types import DeviceRequest

    if gpus is None:
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if not gpus:
        return []
    return [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]


def docker_run_line(kw: dict[str, Any], gpus: list[int] | None) -> str:
    argv = ["docker", "run", "--rm", "--name", kw["name"]]
    if kw["device_requests"]:
        argv += ["--gpus", "all" if gpus is None else f'"device={",".join(map(str, gpus))}"']
    if "shm_size" in kw:
        argv += ["--shm-size", kw["shm_size"]]
    if "ipc_mode" in kw:
        argv += [f"--ipc={kw['ipc_mode']}"]
    for cport, (host, hport) in kw["ports"].items():
        argv += ["-p", f"{host}:{hport}:{cport.split('/')[0]}"]
    for src, v in kw["volumes"].items():
        argv += ["-v", f"{src}:{v['bind']}" + (":ro" if v["mode"] == "ro" else "")]
    for k, v in sorted(kw["environment"].items()):
        argv += ["-e", k if is_secret(k) else f"{k}={v}"]  # secrets: taken from the caller's env
    return shlex.join(argv + [kw["image"]] + kw["command"])


class PullProgress:
    """Layers done of layers seen, and bytes, said at each finished layer and every 10 s between:
    a 10 GB image over a slow link otherwise looks hung for minutes."""

    def __init__(self, image: str, say: Callable[[str], None], every_s: float = 10.0) -> None:
        self.image, self.say, self.every_s = image, say, every_s
        self.seen: set[str] = set()
        self.done: set[str] = set()
        self.bytes: dict[str, tuple[int, int]] = {}  # layer -> (downloaded, total)
        self.last = time.monotonic()

    def text(self) -> str:
        got, total = sum(c for c, _ in self.bytes.values()), sum(t for _, t in self.bytes.values())
        size = f", {got / 1e9:.1f}/{total / 1e9:.1f} GB" if total else ""
        return f"{len(self.done)}/{len(self.seen)} layers{size}"

    def event(self, ev: dict) -> None:
        layer, status = ev.get("id"), ev.get("status", "")
        if not layer or not status or status.startswith("Pulling from"):  # that one is the tag
            return
        self.seen.add(layer)
        detail = ev.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            self.bytes[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        if status in ("Pull complete", "Already exists") and layer not in self.done:
            self.done.add(layer)
            if layer in self.bytes:
                self.bytes[layer] = (self.bytes[layer][1], self.bytes[layer][1])
            self.say(f"pulling {self.image}: {self.text()}")
            self.last = time.monotonic()
        elif time.monotonic() - self.last >= self.every_s:
            self.say(f"pulling {self.image}: {self.text()}")
            self.last = time.monotonic()
