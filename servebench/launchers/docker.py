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
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from servebench.errors import folded
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.docker_parts import PullProgress, device_requests, docker_run_line
from servebench.launchers.preflight import check_image_cuda, local_checks, run_checks
from servebench.launchers.owner import docker_labels, from_labels, owner_alive
from servebench.launchers.timeouts import option_s, ready_timeout
from servebench.signals import shielded
from servebench.launchers.readiness import free_port, log_tail, opening, redact_env, served_name, wait_ready
from servebench.engines.specs import EngineSpec, SpecError, load_spec, render_command, resolve_local_model


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def hf_cache_dir() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


class DockerLauncher:
    name = "docker"

    def __init__(self, *, client: Any = None, progress: Callable[[str], None] = _stderr,
                 poll_s: float = 1.0, host: str = "127.0.0.1", stop_grace_s: float = 20.0) -> None:
        self._client = client  # injected in tests; docker.from_env() otherwise
        self.progress = progress
        self.poll_s = poll_s
        self.host = host
        self.stop_grace_s = stop_grace_s  # SIGTERM, then this long for the engine to exit, then SIGKILL
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
        snap = resolve_local_model(spec, req.model, cache)
        if snap is not None:  # seen through the cache mount, so the snapshot's links to ../../blobs resolve
            model = f"{d.hf_cache.rstrip('/')}/{snap.relative_to(cache).as_posix()}"
        values = {"python": "python3", "model": model, "host": "0.0.0.0", "port": d.port,
                  "served_model_name": served_name(req)}
        command = render_command(spec, d, values, gpus=req.gpus, options=req.options, extra_args=req.extra_args)
        env = dict(d.env)
        env.update({k: os.environ[k] for k in spec.passthrough_env if k in os.environ})
        env.update(req.env)
        kwargs: dict[str, Any] = {
            "image": image, "command": command, "detach": True,
            "name": req.options.get("container_name") or f"servebench-{spec.name}-{uuid.uuid4().hex[:8]}",
            # run, host, pid: `servebench cleanup` and the next launch find a killed run's leftovers
            "labels": docker_labels(spec.name),
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

    def dry_run(self, req: LaunchRequest) -> str:
        """The exact `docker run` line start() would run (secret values taken from the caller's
        env, never printed); nothing is pulled, started or reaped."""
        try:
            spec = load_spec(req.engine)
            return self.plan(spec, req, req.port or free_port(self.host))["docker_run"]
        except SpecError as e:
            raise LaunchError(str(e)) from None

    def start(self, req: LaunchRequest) -> Server:
        op = opening(req, self.host, self.plan)
        spec, port, plan, adapter = op.spec, op.port, op.plan, op.adapter
        kw = plan["kwargs"]
        self.log_path = op.log_path
        self.stop_grace_s = option_s(req, "stop_grace_s", self.stop_grace_s)
        cache = Path(req.options.get("hf_cache") or hf_cache_dir()).expanduser()
        run_checks(local_checks(req, cache), self.progress)  # before any pull: GPUs asked for, disk for the weights
        self.reap()
        try:
            self._ensure_image(kw["image"], req.options.get("pull", "missing"), option_s(req, "pull_timeout_s", 3600.0))
            if kw["device_requests"]:  # a CUDA image the driver cannot run: one line, before the container starts
                run_checks([lambda: check_image_cuda(kw["image"], self._image_config(kw["image"]))], self.progress)
            self.progress(f"starting {kw['image']} as {kw['name']} on {self.host}:{port}")
            atexit.register(self.stop)
            self._name = kw["name"]  # so stop() finds a container whose run() call was interrupted
            self.container = self.client.containers.run(**kw)
            self._log_thread = threading.Thread(target=self._stream_logs, args=(self.container,), daemon=True)
            self._log_thread.start()
            ready_s = wait_ready(spec, f"http://{self.host}:{port}", adapter=adapter, model=served_name(req),
                                 timeout_s=ready_timeout(req), exited=self._exited, tail=self._tail,
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

    def _image_config(self, image: str) -> dict:
        """The local image's Config (Env, Labels); {} when docker cannot say."""
        try:
            return dict((self.client.images.get(image).attrs or {}).get("Config") or {})
        except Exception:  # noqa: BLE001 - no config is "not checked", never a failed launch
            return {}

    def _ensure_image(self, image: str, policy: str, timeout_s: float = 3600.0) -> None:
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
        pull = PullProgress(image, self.progress)
        deadline = time.monotonic() + timeout_s
        for ev in self.client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in ev:
                raise LaunchError(f"docker pull {image} failed: {folded(ev['error'])}")
            pull.event(ev)
            if time.monotonic() >= deadline:  # the pull phase's own time-out, apart from start-up's
                raise LaunchError(f"docker pull {image}: phase download timed out after {timeout_s:.0f}s "
                                  f"({pull.text()}); pre-pull it, or raise launcher option pull_timeout_s")
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
        if container is None and name is not None:
            try:
                container = self.client.containers.get(name)
            except Exception:  # never created (NotFound), or the daemon is gone: nothing to remove
                container = None
        if container is not None:
            hurry: list[int] = []  # a second Ctrl-C cuts the grace period short, never the removal
            with shielded(lambda sig: (hurry.append(sig), self.progress(
                    f"interrupt held: removing container {container.name} now (no more grace)"))):
                self._stop_gracefully(container, hurry)
                _remove(container, self.progress)
        atexit.unregister(self.stop)
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
            self._log_thread = None

    def _stop_gracefully(self, container: Any, hurry: list[int]) -> None:
        """SIGTERM, then up to stop_grace_s for the engine to free its GPUs and exit."""
        if self.stop_grace_s <= 0:
            return
        try:
            container.kill(signal="SIGTERM")
        except Exception:  # already exited or gone: removal below settles it
            return
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline and not hurry:
            try:
                container.reload()
            except Exception:
                return
            if container.status in ("exited", "dead"):
                return
            time.sleep(min(0.2, self.poll_s))

    def reap(self) -> list[str]:
        """Remove containers that a servebench run on this host left behind when it was killed
        (its process is gone): they would hold GPUs and ports. Live runs' containers are kept."""
        try:
            found = self.client.containers.list(all=True, filters={"label": "servebench"})
        except Exception:  # no daemon: start() reports that
            return []
        gone = []
        for c in found:
            if owner_alive(from_labels(getattr(c, "labels", None) or {})) is False:
                self.progress(f"removing container {c.name} left by a killed servebench run "
                              f"({(c.labels or {}).get('servebench.run', '?')})")
                _remove(c, self.progress)
                gone.append(c.name)
        return gone


def _remove(container: Any, progress: Callable[[str], None]) -> None:
    try:
        container.remove(force=True)  # kill + remove, even if it already exited
    except Exception as e:
        if type(e).__name__ != "NotFound":
            progress(f"warning: could not remove container {container.name}: {folded(str(e))}")


def _is_docker_error(e: BaseException) -> bool:
    return type(e).__module__.startswith(("docker.", "requests.", "urllib3."))
