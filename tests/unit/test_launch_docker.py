"""Docker launcher against a fake docker client that records the SDK calls servebench makes.

The fake "container" is an in-process HTTP server on the host port servebench mapped, so the
real readiness code (health poll + one generation request) runs against it."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest

from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.launchers.docker import DockerLauncher
from servebench.launchers.readiness import free_port
from servebench.engines.specs import load_spec

HUB = "meta-llama/Llama-2-7b-hf"


@pytest.fixture(autouse=True)
def roomy_disk(monkeypatch):
    """The preflight disk check sees room for the weights, whatever this host's disk holds."""
    from servebench.launchers import preflight

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: shutil_usage(10**13))


def shutil_usage(free):
    import shutil

    return shutil._ntuple_diskusage(free, 0, free)


class FakeContainer:
    def __init__(self, kwargs: dict, behaviour: str):
        self.name, self.id = kwargs["name"], "c0ffee"
        self.labels = kwargs.get("labels", {})
        self.status, self.attrs = "running", {"State": {"ExitCode": 0}}
        self.signals: list[str] = []
        self.behaviour = behaviour
        self.removed = threading.Event()
        self.remove_calls: list[dict] = []
        self.httpd = None
        (cport, (host, port)), = kwargs["ports"].items()
        if behaviour == "crash":
            self.status, self.attrs = "exited", {"State": {"ExitCode": 1}}
        elif behaviour in ("ok", "never_healthy"):
            self.httpd = _serve(host, port, healthy=behaviour == "ok")

    def reload(self):
        if self.behaviour == "interrupt":
            self.behaviour = "interrupted"  # the user's one Ctrl-C
            raise KeyboardInterrupt
        if self.removed.is_set():
            raise docker.errors.NotFound("gone")

    def logs(self, stream: bool, follow: bool):
        assert stream and follow
        yield b"Loading weights\n"
        if self.behaviour == "crash":
            yield b"torch.OutOfMemoryError: CUDA out of memory (fake)\n"
            return
        yield b"Ready\n"
        self.removed.wait(10)

    def kill(self, signal: str = "SIGKILL"):
        self.signals.append(signal)
        if self.behaviour != "ignores_sigterm":
            self.status = "exited"

    def remove(self, force: bool = False):
        self.remove_calls.append({"force": force})
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
        self.removed.set()


class _Images:
    def __init__(self, d: "FakeDocker"):
        self.d = d

    def get(self, image):
        self.d.calls.append(("images.get", image))
        if not self.d.have_image:
            raise docker.errors.ImageNotFound("no such image")


class _Containers:
    def __init__(self, d: "FakeDocker"):
        self.d = d

    def run(self, **kwargs):
        self.d.calls.append(("containers.run", kwargs))
        c = FakeContainer(kwargs, self.d.behaviour)
        self.d.created.append(c)
        if self.d.behaviour == "interrupt_in_run":  # Ctrl-C after the daemon created it
            raise KeyboardInterrupt
        return c

    def list(self, all=False, filters=None):
        self.d.calls.append(("containers.list", filters))
        return [c for c in self.d.created + self.d.others if not c.removed.is_set()
                and all and set(filters["label"].split(",")) <= set(c.labels)]

    def get(self, name):
        self.d.calls.append(("containers.get", name))
        for c in self.d.created:
            if c.name == name and not c.removed.is_set():
                return c
        raise docker.errors.NotFound(name)


class FakeDocker:
    """The SDK surface servebench uses: images.get, api.pull, containers.run/get, and the
    container's reload/status/attrs/logs/remove."""

    def __init__(self, behaviour: str = "ok", have_image: bool = True, pull_events: list[dict] | None = None):
        self.calls: list[tuple] = []
        self.behaviour, self.have_image = behaviour, have_image
        self.pull_events = pull_events or []
        self.images, self.containers, self.api = _Images(self), _Containers(self), self
        self.created: list[FakeContainer] = []
        self.others: list[FakeContainer] = []  # containers of other (earlier) runs

    def pull(self, repo, tag=None, stream=False, decode=False):  # api.pull
        self.calls.append(("api.pull", repo, tag))
        assert stream and decode
        yield from self.pull_events


def _serve(host: str, port: int, healthy: bool) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'data: {"choices":[{"index":0,"text":"x","finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def gpu_request(ids):
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


EXPECTED = {
    "vllm": dict(image="vllm/vllm-openai:v0.11.0", port=8000, cache="/root/.cache/huggingface", shm=None, ipc="host",
                 command=["--model", HUB, "--served-model-name", HUB, "--host", "0.0.0.0", "--port", "8000",
                          "--tensor-parallel-size", "2"]),
    "tgi": dict(image="ghcr.io/huggingface/text-generation-inference:3.3.5", port=80, cache="/data", shm="1g", ipc=None,
                command=["--model-id", HUB, "--num-shard", "2"]),
    # LightLLM loads only directories: the hub id's snapshot, seen through the cache mount
    "lightllm": dict(image="ghcr.io/modeltc/lightllm:v1.0.1", port=8080, cache="/root/.cache/huggingface", shm="32g",
                     ipc=None, command=["python", "-m", "lightllm.server.api_server", "--model_dir",
                                        "/root/.cache/huggingface/hub/models--meta-llama--Llama-2-7b-hf/snapshots/"
                                        "c0ffee", "--host", "0.0.0.0", "--port", "8080", "--tp", "2"]),
    "sglang": dict(image="lmsysorg/sglang:v0.4.7.post1-cu124", port=30000, cache="/root/.cache/huggingface",
                   shm=None, ipc="host", command=["python3", "-m", "sglang.launch_server", "--model-path", HUB,
                                                  "--served-model-name", HUB, "--host", "0.0.0.0", "--port", "30000",
                                                  "--enable-metrics", "--tp", "2"]),
}


def cached_snapshot(cache, model: str, rev: str, main: bool = True, config: bool = True):
    """A hub model as huggingface_hub lays it out: snapshots/<rev> (links to ../../blobs) and refs/main."""
    repo = cache / "hub" / ("models--" + model.replace("/", "--"))
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    if config:
        (repo / "blobs" / rev).write_text("{}")
        (snap / "config.json").symlink_to(f"../../blobs/{rev}")
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return snap


@pytest.mark.parametrize("engine", sorted(EXPECTED))
def test_container_spec_field_by_field(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_s3cret")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    e = EXPECTED[engine]
    cached_snapshot(tmp_path / "hf", HUB, "c0ffee")
    req = LaunchRequest(engine=engine, model=HUB, gpus=[2, 3], options={"hf_cache": str(tmp_path / "hf")})
    plan = DockerLauncher(client=FakeDocker()).plan(load_spec(engine), req, 40001)
    kw = plan["kwargs"]
    assert kw["image"] == e["image"]
    assert kw["command"] == e["command"]
    assert kw["device_requests"] == gpu_request(["2", "3"])
    assert kw.get("shm_size") == e["shm"] and kw.get("ipc_mode") == e["ipc"]
    assert kw["ports"] == {f"{e['port']}/tcp": ("127.0.0.1", 40001)}
    assert kw["volumes"] == {str(tmp_path / "hf"): {"bind": e["cache"], "mode": "rw"}}
    dev = {"VLLM_SERVER_DEV_MODE": "1"} if engine == "vllm" else {}  # vLLM's cache-reset route
    assert kw["environment"] == {"HF_TOKEN": "hf_s3cret", **dev}
    assert kw["detach"] is True and kw["labels"]["servebench.engine"] == engine
    assert plan["env_shown"] == {"HF_TOKEN": "<redacted>", **dev}
    line = plan["docker_run"]
    assert "hf_s3cret" not in line and " -e HF_TOKEN " in line
    assert f"-p 127.0.0.1:40001:{e['port']}" in line and """--gpus '"device=2,3"'""" in line
    assert line.endswith(e["image"] + " " + " ".join(e["command"]))


def test_local_model_dir_is_mounted_read_only(tmp_path):
    model = tmp_path / "tiny"
    model.mkdir()
    req = LaunchRequest(engine="vllm", model=str(model), gpus=None, options={"hf_cache": str(tmp_path / "hf"),
                                                                              "served_model_name": "tiny"})
    kw = DockerLauncher(client=FakeDocker()).plan(load_spec("vllm"), req, 1)["kwargs"]
    assert kw["volumes"][str(model)] == {"bind": "/model", "mode": "ro"}
    assert kw["command"][:4] == ["--model", "/model", "--served-model-name", "tiny"]
    assert kw["device_requests"] == [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]  # all GPUs
    assert DockerLauncher(client=FakeDocker()).plan(load_spec("vllm"), LaunchRequest(
        engine="vllm", model="m", gpus=[]), 1)["kwargs"]["device_requests"] == []


def start(tmp_path, client, **opts):
    launcher = DockerLauncher(client=client, progress=lambda m: None, poll_s=0.05)
    req = LaunchRequest(engine="vllm", model=HUB, gpus=[0], run_dir=tmp_path, ready_timeout_s=opts.pop("timeout", 20),
                        env={"HF_TOKEN": "hf_s3cret", "MY_FLAG": "1"}, options={"hf_cache": str(tmp_path / "hf"), **opts})
    return launcher, launcher.start(req)


def test_success_then_removed(tmp_path):
    client = FakeDocker()
    launcher, server = start(tmp_path, client)
    (name, kw), = [c for c in client.calls if c[0] == "containers.run"]
    c = client.created[0]
    assert server.base_url == f"http://127.0.0.1:{kw['ports']['8000/tcp'][1]}" and server.adapter == "openai-completions"
    assert server.time_to_ready_s is not None and server.info["container"] == kw["name"]
    assert server.info["env"] == {"HF_TOKEN": "<redacted>", "MY_FLAG": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert "hf_s3cret" not in json.dumps(server.info)
    assert server.info["docker_run"].startswith("docker run --rm --name servebench-vllm-")
    assert not c.remove_calls
    launcher.stop()
    launcher.stop()
    assert c.signals == ["SIGTERM"] and c.remove_calls == [{"force": True}]  # a grace period, then removed
    log = (tmp_path / "server.log").read_text()
    assert "Loading weights" in log and "Ready" in log and "hf_s3cret" not in log
    assert client.calls[:2] == [("containers.list", {"label": "servebench"}), ("images.get", "vllm/vllm-openai:v0.11.0")]


def test_crash_removes_container_and_reports_logs(tmp_path):
    client = FakeDocker(behaviour="crash")
    with pytest.raises(LaunchError) as ei:
        start(tmp_path, client)
    msg = str(ei.value)
    assert "container exited with code 1 during start-up" in msg and "CUDA out of memory (fake)" in msg
    assert "\n" not in msg and client.created[0].remove_calls == [{"force": True}]


def test_readiness_timeout_removes_container(tmp_path):
    client = FakeDocker(behaviour="never_healthy")
    with pytest.raises(LaunchError, match=r"vllm not healthy after 1s .*HTTP 503.*Loading weights"):
        start(tmp_path, client, timeout=1.0)
    assert client.created[0].remove_calls == [{"force": True}]


def test_ctrl_c_removes_container(tmp_path):
    client = FakeDocker(behaviour="interrupt")
    with pytest.raises(KeyboardInterrupt):
        start(tmp_path, client)
    assert client.created[0].remove_calls == [{"force": True}]


def test_ctrl_c_inside_run_still_removes_the_created_container(tmp_path):
    client = FakeDocker(behaviour="interrupt_in_run")
    with pytest.raises(KeyboardInterrupt):
        start(tmp_path, client)
    name = client.created[0].name
    assert ("containers.get", name) in client.calls and client.created[0].remove_calls == [{"force": True}]


def test_pull_with_progress(tmp_path):
    events = [{"status": "Pulling from vllm/vllm-openai", "id": "v0.11.0"},
              {"status": "Pulling fs layer", "id": "a"}, {"status": "Pulling fs layer", "id": "b"},
              {"status": "Downloading", "id": "a", "progress": "[=>  ] 1MB/9MB"},
              {"status": "Pull complete", "id": "a"}, {"status": "Already exists", "id": "b"}]
    client = FakeDocker(have_image=False, pull_events=events)
    msgs: list[str] = []
    launcher = DockerLauncher(client=client, progress=msgs.append, poll_s=0.05)
    launcher.start(LaunchRequest(engine="vllm", model=HUB, run_dir=tmp_path, options={"hf_cache": str(tmp_path)}))
    launcher.stop()
    assert ("api.pull", "vllm/vllm-openai", "v0.11.0") in client.calls
    assert "pulling vllm/vllm-openai:v0.11.0: 1/2 layers" in msgs and "pulling vllm/vllm-openai:v0.11.0: 2/2 layers" in msgs


def test_pull_error_starts_nothing(tmp_path):
    client = FakeDocker(have_image=False, pull_events=[{"error": "manifest unknown\n"}])
    with pytest.raises(LaunchError, match=r"^docker pull vllm/vllm-openai:nope failed: manifest unknown$"):
        DockerLauncher(client=client, progress=lambda m: None).start(
            LaunchRequest(engine="vllm", model=HUB, run_dir=tmp_path, options={"tag": "nope"}))
    assert not client.created


def test_docker_api_error_is_one_line(tmp_path):
    class Broken(_Containers):
        def run(self, **kwargs):
            raise docker.errors.APIError("500 Server Error: could not select device driver \"\" with capabilities: [[gpu]]")

    client = FakeDocker()
    client.containers = Broken(client)
    with pytest.raises(LaunchError, match=r"^docker: 500 Server Error: could not select device driver"):
        DockerLauncher(client=client, progress=lambda m: None).start(
            LaunchRequest(engine="tgi", model=HUB, port=free_port(), run_dir=tmp_path))


def test_labels_name_the_run_and_the_next_launch_reaps_a_killed_runs_container(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = FakeDocker()
    mine = {"servebench": "1", "servebench.host": socket.gethostname()}
    killed = FakeContainer({"name": "servebench-vllm-old", "ports": {"8000/tcp": ("127.0.0.1", 1)}, "labels": {
        **mine, "servebench.run": "r-old", "servebench.pid": str(dead.pid), "servebench.started": "1"}}, "exited")
    alive = FakeContainer({"name": "servebench-vllm-live", "ports": {"8000/tcp": ("127.0.0.1", 1)}, "labels": {
        **mine, "servebench.run": "r-live", "servebench.pid": str(os.getppid()),
        "servebench.started": str(int(__import__("psutil").Process(os.getppid()).create_time()))}}, "exited")
    elsewhere = FakeContainer({"name": "servebench-vllm-remote", "ports": {"8000/tcp": ("127.0.0.1", 1)}, "labels": {
        "servebench": "1", "servebench.host": "another-host", "servebench.pid": "1", "servebench.started": "1"}}, "exited")
    client.others = [killed, alive, elsewhere]
    launcher, server = start(tmp_path, client)
    kw = [c for c in client.calls if c[0] == "containers.run"][0][1]
    assert kw["labels"]["servebench.pid"] == str(os.getpid()) and kw["labels"]["servebench.run"]
    assert killed.remove_calls == [{"force": True}]
    assert alive.remove_calls == [] and elsewhere.remove_calls == []  # a live run's, another host's: kept
    launcher.stop()


def test_second_ctrl_c_cuts_the_grace_short_but_still_removes(tmp_path):
    import signal

    client = FakeDocker()
    launcher, _ = start(tmp_path, client)
    c = client.created[0]
    c.behaviour = "ignores_sigterm"
    real_kill = c.kill

    def kill(**kw):
        real_kill(**kw)
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again while the engine drains

    c.kill = kill
    launcher.stop_grace_s = 30
    t0 = __import__("time").monotonic()
    try:  # the stop is the answer to a first Ctrl-C: the second is held, and dropped after it
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        launcher.stop()
    assert __import__("time").monotonic() - t0 < 10
    assert c.signals == ["SIGTERM"] and c.remove_calls == [{"force": True}]


def test_a_ctrl_c_during_a_normal_stop_is_honoured_after_the_removal(tmp_path, handlers):
    import signal

    client = FakeDocker()
    launcher, _ = start(tmp_path, client)
    c = client.created[0]
    real_kill = c.kill
    c.behaviour = "ignores_sigterm"

    def kill(**kw):
        real_kill(**kw)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while a finished run's container drains

    c.kill = kill
    launcher.stop_grace_s = 30
    with pytest.raises(KeyboardInterrupt):  # never dropped: raised once the container is gone
        launcher.stop()
    assert c.remove_calls == [{"force": True}]


def test_env_reaches_the_container_and_vllm_dev_mode_for_the_cache_reset(tmp_path):
    req = LaunchRequest(engine="vllm", model=HUB, gpus=[0], env={"NCCL_P2P_DISABLE": "1"},
                        options={"hf_cache": str(tmp_path)})
    plan = DockerLauncher(client=FakeDocker()).plan(load_spec("vllm"), req, 1)
    env = plan["kwargs"]["environment"]
    assert env["NCCL_P2P_DISABLE"] == "1" and env["VLLM_SERVER_DEV_MODE"] == "1"
    assert "-e NCCL_P2P_DISABLE=1" in plan["docker_run"]


def test_pull_says_bytes_and_has_its_own_time_out(tmp_path, monkeypatch):
    from servebench.launchers import docker_parts

    clock = [0.0]
    monkeypatch.setattr(docker_parts.time, "monotonic", lambda: clock[0])
    msgs: list[str] = []
    pull = docker_parts.PullProgress("img:1", msgs.append, every_s=10)
    pull.event({"status": "Pulling fs layer", "id": "a"})
    pull.event({"status": "Downloading", "id": "a", "progressDetail": {"current": 1_000_000_000, "total": 4_000_000_000}})
    clock[0] = 11  # no layer finished for 11 s: said anyway, with bytes
    pull.event({"status": "Downloading", "id": "a", "progressDetail": {"current": 2_000_000_000, "total": 4_000_000_000}})
    pull.event({"status": "Pull complete", "id": "a"})
    assert msgs == ["pulling img:1: 0/1 layers, 2.0/4.0 GB", "pulling img:1: 1/1 layers, 4.0/4.0 GB"]

    events = [{"status": "Pulling fs layer", "id": "a"}] * 3
    client = FakeDocker(have_image=False, pull_events=events)
    with pytest.raises(LaunchError, match=r"^docker pull vllm/vllm-openai:v0.11.0: phase download timed out after 0s "
                                          r"\(0/1 layers\); pre-pull it, or raise launcher option pull_timeout_s$"):
        DockerLauncher(client=client, progress=lambda m: None).start(LaunchRequest(
            engine="vllm", model=HUB, run_dir=tmp_path, options={"hf_cache": str(tmp_path), "pull_timeout_s": "0"}))
    assert not client.created


def test_lightllm_hub_id_not_cached_stops_before_anything_runs(tmp_path):
    docker_ = FakeDocker()
    launcher = DockerLauncher(client=docker_, progress=lambda m: None, poll_s=0.05)
    req = LaunchRequest(engine="lightllm", model=HUB, gpus=[0], run_dir=tmp_path,
                        options={"hf_cache": str(tmp_path / "hf")})
    with pytest.raises(LaunchError) as ei:
        launcher.start(req)
    msg = str(ei.value)
    assert "lightllm loads only a local model directory" in msg and "\n" not in msg
    assert f"huggingface-cli download {HUB}" in msg and str(tmp_path / "hf" / "hub") in msg
    assert docker_.calls == []  # nothing pulled, listed or created
    with pytest.raises(LaunchError, match="lightllm loads only a local model directory"):
        launcher.dry_run(req)
    # a snapshot without config.json is not a loadable model directory either
    cached_snapshot(tmp_path / "hf", HUB, "partial", main=False, config=False)
    with pytest.raises(LaunchError, match="neither a directory nor in the HF cache"):
        launcher.dry_run(req)


def test_lightllm_picks_the_snapshot_refs_main_names(tmp_path):
    cache = tmp_path / "hf"
    cached_snapshot(cache, HUB, "aaa111")
    newer = cached_snapshot(cache, HUB, "bbb222", main=False)
    os.utime(newer, (2e9, 2e9))
    req = LaunchRequest(engine="lightllm", model=HUB, gpus=[0], options={"hf_cache": str(cache)})
    cmd = DockerLauncher(client=FakeDocker()).plan(load_spec("lightllm"), req, 1)["kwargs"]["command"]
    assert cmd[cmd.index("--model_dir") + 1].endswith("/snapshots/aaa111")
    (cache / "hub" / "models--meta-llama--Llama-2-7b-hf" / "refs" / "main").unlink()  # no ref: the newest one
    cmd = DockerLauncher(client=FakeDocker()).plan(load_spec("lightllm"), req, 1)["kwargs"]["command"]
    assert cmd[cmd.index("--model_dir") + 1].endswith("/snapshots/bbb222")


def test_lightllm_local_dir_is_mounted_and_shared_memory_is_at_least_2_gb(tmp_path):
    model = tmp_path / "llama"
    model.mkdir()
    req = LaunchRequest(engine="lightllm", model=str(model), gpus=[0, 1], options={"hf_cache": str(tmp_path / "hf")})
    kw = DockerLauncher(client=FakeDocker()).plan(load_spec("lightllm"), req, 1)["kwargs"]
    assert kw["command"][kw["command"].index("--model_dir") + 1] == "/model"
    assert kw["volumes"][str(model)] == {"bind": "/model", "mode": "ro"}
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    shm = kw["shm_size"]
    assert int(shm[:-1]) * units[shm[-1].lower()] >= 2 * 2**30  # LightLLM's docs: >= 2 GB
    assert kw["image"].split(":")[1] not in ("main", "latest")  # a release, not a moving tag


def test_a_cuda_image_the_driver_cannot_run_is_refused_before_the_container_starts(tmp_path, monkeypatch):
    from servebench.launchers import preflight

    class Image:
        attrs = {"Config": {"Env": ["CUDA_VERSION=12.8.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=tesla,driver>=535"]}}

    class WithConfig(_Images):
        def get(self, image):
            super().get(image)
            return Image()

    monkeypatch.setattr(preflight, "driver_cuda", lambda nvml=None: (12, 4))
    client = FakeDocker()
    client.images = WithConfig(client)
    msgs: list[str] = []
    with pytest.raises(LaunchError, match=r"^vllm/vllm-openai:v0\.11\.0 needs CUDA 12\.8 \(NVIDIA_REQUIRE_CUDA\), this host's "
                                          r"driver supports up to CUDA 12\.4: update the NVIDIA driver"):
        DockerLauncher(client=client, progress=msgs.append).start(
            LaunchRequest(engine="vllm", model=HUB, gpus=[0], run_dir=tmp_path, options={"hf_cache": str(tmp_path)}))
    assert not client.created  # nothing started
    monkeypatch.setattr(preflight, "driver_cuda", lambda nvml=None: (12, 8))
    launcher = DockerLauncher(client=client, progress=msgs.append, poll_s=0.05)
    launcher.start(LaunchRequest(engine="vllm", model=HUB, gpus=[0], run_dir=tmp_path, options={"hf_cache": str(tmp_path)}))
    launcher.stop()
    assert any(m.startswith("preflight cuda: vllm/vllm-openai:v0.11.0 needs CUDA 12.8") for m in msgs)
