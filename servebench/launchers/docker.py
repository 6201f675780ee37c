"""Docker launcher: the engine's image through the docker SDK (no shelling out).

The container is created with explicit fields (image, command, device requests, shm/ipc, port,
volumes, env) and always removed by stop(); the equivalent `docker run` line goes into
Server.info so a user can reproduce the server by hand. Secret values never reach info or logs.
"""

from __future__ import annotations

import atexit
import os
import shlex
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from servebench.errors import folded
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.readiness import is_secret, log_tail, opening, redact_env, served_name, wait_ready
from servebench.engines.specs import EngineSpec, SpecError, render_command


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def hf_cache_dir() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


class DockerLauncher:
    name = "docker"

    def __init__(self, *, client: Any = None, progress: Callable[[str], None] = _stderr,
                 poll_s: float = 1.0, host: str = "127.0.0.1") -> None:
        self._client = client  # injected in tests; docker.from_env() otherwise
        self.progress = progress
        self.poll_s = poll_s
        self.host = host
        self.container: Any = None
        self._name: str | None = None
        self.log_path: Path | None = None
        self._log_thread: threading.Thread | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as e:
                raise LaunchError(f"cannot reach the docker daemon: {folded(e)}") from None
        return self._client

    def plan(self, spec: EngineSpec, req: LaunchRequest, host_port: int) -> dict[str, Any]:
        """The containers.run() keyword arguments, plus `docker_run` (the CLI equivalent) and
        `env_shown` (redacted env); pure, so tests check it field by field."""
        d = spec.docker
        if d is None:
            raise SpecError(f"{spec.name} has no docker section in {spec.source}; use --launcher process")
        image = req.options.get("image") or f"{d.image}:{req.options.get('tag') or d.tag}"
        volumes: dict[str, dict[str, str]] = {}
        model = req.model
        if Path(model).expanduser().is_dir():  # a local model: mount it, pass the mount point
            volumes[str(Path(model).expanduser().resolve())] = {"bind": d.model_mount, "mode": "ro"}
            model = d.model_mount
        cache = Path(req.options.get("hf_cache") or hf_cache_dir()).expanduser()
        volumes[str(cache)] = {"bind": d.hf_cache, "mode": "rw"}
        values = {"python": "python3", "model": model, "host": "0.0.0.0", "port": d.port,
                  "served_model_name": served_name(req)}
        command = render_command(spec, d, values, gpus=req.gpus, options=req.options, extra_args=req.extra_args)
        env = dict(d.env)
        env.update({k: os.environ[k] for k in spec.passthrough_env if k in os.environ})
        env.update(req.env)
        kwargs: dict[str, Any] = {
            "image": image, "command": command, "detach": True,
            "name": req.options.get("container_name") or f"servebench-{spec.name}-{uuid.uuid4().hex[:8]}",
            "labels": {"servebench": "1", "servebench.engine": spec.name},
            "environment": env, "ports": {f"{d.port}/tcp": (self.host, host_port)}, "volumes": volumes,
            "device_requests": device_requests(req.gpus),
        }
        shm = req.options.get("shm_size") or d.shm_size
        ipc = req.options.get("ipc_mode") or d.ipc_mode
        if shm:
            kwargs["shm_size"] = shm
        if ipc:
            kwargs["ipc_mode"] = ipc
        return {"kwargs": kwargs, "docker_run": docker_run_line(kwargs, req.gpus), "env_shown": redact_env(env)}

    def start(self, req: LaunchRequest) -> Server:
        op = opening(req, self.host, self.plan)
        spec, port, plan, adapter = op.spec, op.port, op.plan, op.adapter
        kw = plan["kwargs"]
        self.log_path = op.log_path
        try:
            self._ensure_image(kw["image"], req.options.get("pull", "missing"))
            self.progress(f"starting {kw['image']} as {kw['name']} on {self.host}:{port}")
            atexit.register(self.stop)
            self._name = kw["name"]  # so stop() finds a container whose run() call was interrupted
            self.container = self.client.containers.run(**kw)
            self._log_thread = threading.Thread(target=self._stream_logs, args=(self.container,), daemon=True)
            self._log_thread.start()
            ready_s = wait_ready(spec, f"http://{self.host}:{port}", adapter=adapter, model=served_name(req),
                                 timeout_s=req.ready_timeout_s, exited=self._exited, tail=self._tail,
                                 poll_s=self.poll_s)
        except BaseException as e:  # readiness failure, docker error, Ctrl-C: never leave it running
            self.stop()
            if isinstance(e, Exception) and not isinstance(e, LaunchError) and _is_docker_error(e):
                raise LaunchError(f"docker: {folded(e)}") from None
            raise
        return Server(base_url=f"http://{self.host}:{port}", engine=spec.name, adapter=adapter,
                      time_to_ready_s=ready_s, info={
                          "launcher": self.name, "image": kw["image"], "container": self.container.name,
                          "container_id": getattr(self.container, "id", None), "command": shlex.join(kw["command"]),
                          "docker_run": plan["docker_run"], "env": plan["env_shown"], "port": port,
                          "log": str(self.log_path), "served_model_name": served_name(req),
                          "spec": spec.source})

    def _ensure_image(self, image: str, policy: str) -> None:
        import docker

        if policy == "never":
            return
        if policy == "missing":
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
        self.progress(f"pulling {image}")
        done: set[str] = set()
        seen: set[str] = set()
        for ev in self.client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in ev:
                raise LaunchError(f"docker pull {image} failed: {folded(ev['error'])}")
            layer, status = ev.get("id"), ev.get("status", "")
            if layer and status and not status.startswith("Pulling from"):  # that one is the tag
                seen.add(layer)
                if status in ("Pull complete", "Already exists") and layer not in done:
                    done.add(layer)
                    self.progress(f"pulling {image}: {len(done)}/{len(seen)} layers")
        self.progress(f"pulled {image}")

    def _stream_logs(self, container: Any) -> None:
        # a thread, because the SDK's log stream blocks; it ends when the container is removed
        try:
            with open(self.log_path, "ab") as f:
                for chunk in container.logs(stream=True, follow=True):
                    f.write(chunk)
                    f.flush()
        except Exception:  # the container went away mid-stream: the log so far is kept
            pass

    def _tail(self) -> str:
        return log_tail(self.log_path)

    def _exited(self) -> str | None:
        try:
            self.container.reload()
        except Exception as e:
            return f"container vanished ({type(e).__name__})"
        if self.container.status in ("exited", "dead"):
            return f"container exited with code {self.container.attrs.get('State', {}).get('ExitCode')}"
        return None

    def stop(self) -> None:
        container, self.container = self.container, None
        name, self._name = self._name, None
        atexit.unregister(self.stop)
        if container is None and name is not None:
            try:
                container = self.client.containers.get(name)
            except Exception:  # never created (NotFound), or the daemon is gone: nothing to remove
                return
        if container is None:
            return
        try:
            container.remove(force=True)  # kill + remove, even if it already exited
        except Exception as e:
            if type(e).__name__ != "NotFound":
                self.progress(f"warning: could not remove container {container.name}: {folded(e)}")
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
            self._log_thread = None


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


def _is_docker_error(e: BaseException) -> bool:
    return type(e).__module__.startswith(("docker.", "requests.", "urllib3."))
