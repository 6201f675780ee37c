"""TGI's front door: its router refuses (429) past --max-concurrent-requests, 128 by default.
A burst of 1000 against a TGI servebench launched must measure 1000 requests, not 128 and 872
refusals; against a TGI it did not launch, the run says before the load what will be refused.
End to end through the CLI against the emulator speaking TGI with TGI's cap (servebench/run/frontdoor.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from servebench.config import RunConfig
from servebench.emulator.handle import start_emulator
from servebench.engines.specs import SpecError, load_spec, render_command
from servebench.launchers.base import LaunchRequest
from servebench.launchers.docker import DockerLauncher
from servebench.launchers.sagemaker import SageMakerLauncher
from servebench.run import frontdoor
from servebench.run.session import ServerSession
from tests.unit.test_faults_cli import COMMON, only_run_dir, sb, stored

TGI = load_spec("tgi")


def emulated_tgi(tmp_path: Path, cap: int = 8) -> Path:
    """The emulator as a TGI-speaking engine whose front door behaves as TGI's default, at `cap`."""
    spec = tmp_path / "emu-tgi.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "emu-tgi", "adapter": "tgi", "adapters": ["tgi"],
        "output_length": {"forced": True, "how": "the emulator streams max_new_tokens"},
        "flags": {"max_concurrent_requests": "--max-concurrent-requests"},
        "front_door": {"default": cap, "info_key": "max_concurrent_requests"},
        "process": {"command": ["{python}", "-m", "servebench.cli", "emulate"],
                    "args": ["--format", "tgi", "--host", "{host}", "--port", "{port}", "--model", "{served_model_name}",
                             "--ttft-ms", "1500", "--itl-ms", "10", "--max-concurrent-requests", str(cap)]}}))
    return spec


def cfg(**kw) -> RunConfig:
    load = {k: kw.pop(k) for k in ("requests", "concurrency", "rate") if k in kw}
    return RunConfig(backend="tgi", launcher=kw.pop("launcher", "docker"), load=load, **kw)


# -- the bound and the decision
def test_most_in_flight_is_the_closed_loop_else_every_request():
    assert frontdoor.most_in_flight(cfg(requests=1000)) == 1000  # a burst
    assert frontdoor.most_in_flight(cfg(requests=1000, concurrency=20)) == 20
    assert frontdoor.most_in_flight(cfg(requests=10, concurrency=20)) == 10
    assert frontdoor.most_in_flight(cfg(requests=500, rate=50.0)) == 500  # an open loop can fall behind
    assert frontdoor.most_in_flight(cfg(requests=500, rate=50.0, concurrency=64)) == 64


def test_most_in_flight_of_a_trace_counts_its_requests_before_the_workload_is_built():
    c = RunConfig(backend="tgi", workload={"trace": {"source": "mooncake-conversation", "window": "0:60"}})
    from servebench.load.traces import load_trace
    from servebench.load.workload import slice_trace

    n = len(slice_trace(load_trace("mooncake-conversation"), c.workload.trace)[0])
    assert 100 < n < 918 and c.load.requests == 1000  # the default is not the trace's count
    assert frontdoor.most_in_flight(c) == n


@pytest.mark.parametrize("given, expect", [
    ({}, 1000),
    ({"server_args": ["--max-concurrent-requests", "128"]}, None),
    ({"server_args": ["--max-concurrent-requests=64"]}, None),
    ({"env": {"MAX_CONCURRENT_REQUESTS": "256"}}, None),
    ({"launcher_options": {"max_concurrent_requests": "300"}}, None),
    ({"launcher": "external", "endpoint": "http://127.0.0.1:1"}, None),  # not ours to start
])
def test_a_launch_raises_the_cap_unless_the_user_chose(given, expect):
    assert frontdoor.launch_cap(TGI, cfg(requests=1000, **given), 1000) == expect


def test_no_flag_when_the_default_admits_the_load_or_the_engine_has_no_front_door():
    assert frontdoor.launch_cap(TGI, cfg(requests=128), 128) is None
    assert frontdoor.launch_cap(load_spec("vllm"), cfg(requests=1000), 1000) is None
    with pytest.raises(SpecError, match="vllm has no flag for max_concurrent_requests"):
        render_command(load_spec("vllm"), load_spec("vllm").process, {"python": "p", "model": "m", "host": "h",
                       "port": 1, "served_model_name": "m"}, options={"max_concurrent_requests": 5})


def test_docker_and_sagemaker_launches_carry_the_raised_cap(tmp_path):
    c = cfg(requests=1000, model="meta-llama/Llama-2-7b-hf")
    req = ServerSession(c, TGI, "tgi", None, tmp_path, launcher=object(), in_flight=1000)._request()
    cmd = DockerLauncher().plan(TGI, req, 8080)["kwargs"]["command"]
    assert cmd[cmd.index("--max-concurrent-requests") + 1] == "1000"
    env = SageMakerLauncher().container_env(TGI, req)
    assert env["MAX_CONCURRENT_REQUESTS"] == "1000" and env["HF_MODEL_ID"] == "meta-llama/Llama-2-7b-hf"
    small = ServerSession(cfg(requests=20, concurrency=20), TGI, "tgi", None, tmp_path, launcher=object(), in_flight=20)
    assert "--max-concurrent-requests" not in DockerLauncher().plan(TGI, small._request(), 8080)["kwargs"]["command"]
    assert "MAX_CONCURRENT_REQUESTS" not in SageMakerLauncher().container_env(TGI, LaunchRequest("tgi", "m"))


# -- end to end
def test_a_launched_burst_past_the_default_cap_is_served_whole(tmp_path):
    """20 at once against a front door of 8: the launch raises it to 20, so nothing is refused
    (on the old code 12 requests failed with 429 'Model is overloaded')."""
    res = tmp_path / "results"
    p = sb("run", "--backend", str(emulated_tgi(tmp_path)), *COMMON, "--requests", "20", "--output-tokens", "4",
           "--results-dir", str(res))
    assert p.returncode == 0, p.stderr[-3000:]
    summary, run, records = stored(only_run_dir(res))
    assert (summary["completed"], summary["failed"]) == (20, 0)
    assert shlex.split(run["server"]["info"]["command"])[-2:] == ["--max-concurrent-requests", "20"]
    assert run["session"]["front_door"] == {"raised_to": 20, "default": 8, "why": "most in flight"}
    assert not any("HTTP 429" in w for w in summary["warnings"])


def test_a_server_not_launched_here_is_warned_about_before_the_load_and_its_refusals_counted(tmp_path):
    res = tmp_path / "results"
    with start_emulator("tgi", ttft_ms=1500, itl_ms=10, max_concurrent_requests=8) as emu:
        p = sb("run", "--backend", "tgi", "--endpoint", emu.url, *COMMON, "--requests", "20", "--output-tokens", "4",
               "--results-dir", str(res))
    assert p.returncode == 1, p.stderr[-3000:]  # refusals are failures (--max-error-rate 0)
    err = " ".join(p.stderr.split())  # the console wraps long lines
    said = err.find("refuses requests past 8 in flight (its --max-concurrent-requests)")
    assert "this load can have 20 in flight, so up to 12 may fail with HTTP 429: start it with " \
           "--max-concurrent-requests 20" in err
    assert 0 <= said < err.index("running load")  # before the load, not after
    summary, run, records = stored(only_run_dir(res))
    assert (summary["completed"], summary["failed"]) == (8, 12)
    assert any("refuses requests past 8" in w for w in summary["warnings"])
    assert {r.status for r in records if not r.ok} == {429}


def test_a_sweep_group_launches_once_with_the_cap_of_its_largest_level(tmp_path):
    conf = {"name": "door", "results_dir": str(tmp_path / "results"), "telemetry": False,
            "defaults": {"engine": str(emulated_tgi(tmp_path)), "model": "tiny"}, "servers": [{}],
            "load": {"concurrency": [2, 16], "requests": 16, "input_tokens": 16, "output_tokens": 4, "warmup": 0}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(conf))
    p = sb("sweep", str(path))
    assert p.returncode == 0, p.stderr[-3000:]
    sweep_dir = Path(p.stdout.strip().splitlines()[-1])
    index = json.loads((sweep_dir / "index.json").read_text())
    assert [c["status"] for c in index["cells"]] == ["done", "done"]
    for c in index["cells"]:
        s = json.loads((sweep_dir / c["run_dir"] / "summary.json").read_text())
        assert (s["completed"], s["failed"]) == (16, 0)
    assert [g["launches"] for g in index["groups"]] == [1]


def test_a_cap_the_user_set_is_kept_and_what_it_refuses_is_said_before_the_load(tmp_path):
    res = tmp_path / "results"
    p = sb("run", "--backend", str(emulated_tgi(tmp_path)), *COMMON, "--requests", "20", "--output-tokens", "4",
           "--server-arg=--max-concurrent-requests=12", "--results-dir", str(res))
    assert p.returncode == 1, p.stderr[-3000:]
    err = " ".join(p.stderr.split())
    assert 0 <= err.find("refuses requests past 12 in flight") < err.index("running load")
    summary, run, _ = stored(only_run_dir(res))
    assert shlex.split(run["server"]["info"]["command"])[-1] == "--max-concurrent-requests=12"  # the user's, last
    assert "front_door" not in run["session"] and (summary["completed"], summary["failed"]) == (12, 8)


# -- the estimate says what a default TGI would refuse
def _estimate(*args: str) -> dict:
    from click.testing import CliRunner

    from servebench.estimate.cli import estimate

    r = CliRunner().invoke(estimate, ["--model", "llama-2-7b", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_peak_in_flight_counts_queued_and_running_and_frees_a_place_before_an_arrival_at_the_same_instant():
    from types import SimpleNamespace as R

    from servebench.estimate.simstats import peak_in_flight

    reqs = [R(arrive=0.0, done=2.0), R(arrive=0.5, done=1.0), R(arrive=1.0, done=3.0), R(arrive=2.5, done=4.0)]
    assert peak_in_flight(reqs) == 2  # at 1.0 one leaves as one arrives; at 2.5 two are in
    assert peak_in_flight([R(arrive=0.0, done=9.0)] * 5) == 5


def test_the_estimate_notes_a_default_tgi_refusing_what_its_levels_reach():
    over = _estimate("--gpu", "a100-80gb", "--engine", "tgi", "--concurrency", "20,256")
    assert "refuses requests past 128 in flight" in over["front_door_note"] and "reaches 256" in over["front_door_note"]
    assert _estimate("--gpu", "a100-80gb", "--engine", "tgi", "--concurrency", "20,128")["front_door_note"] is None
    assert _estimate("--gpu", "a100-80gb", "--engine", "vllm", "--concurrency", "256")["front_door_note"] is None
    # a trace the A10G cannot keep up with piles up in flight: the queue is counted too
    tr = _estimate("--gpu", "a10g", "--engine", "tgi", "--trace", "mooncake-conversation", "--trace-scale-lengths", "0.25",
                   "--requests", "300", "--trace-speed", "8")
    assert tr["levels"][0]["peak_batch"] < 128 and "reaches" in tr["front_door_note"]
