"""`servebench sweep --executor ray` and `servebench run --workers ray:N` on a real local Ray
cluster started here: a head and two worker nodes as separate raylets on this machine
(ray.cluster_utils.Cluster), one worker with a custom resource only it has. The emulator
launched as an engine keeps the cases cheap; one case runs the real vLLM CPU engine. These
tests never skip: without Ray they fail."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from servebench.emulator import start_emulator
from servebench.store.runfiles import load_records

from tests.unit.test_sweep_cli import SPEC, emulators_alive

pytestmark = pytest.mark.ray

SB = [sys.executable, "-m", "servebench.cli"]


@contextmanager
def _sigint_ignored():
    """What a cluster started from a background job (a script's `ray start ... &`, a runner
    without job control) has: every raylet and worker inherits SIGINT ignored, and a task must
    still stop on ray.cancel. Left to how the suite was launched, the Ctrl-C test below passed
    in a foreground shell and failed under a background one."""
    kept = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, kept)


@pytest.fixture(scope="module")
def cluster():
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.fail("Ray is not importable: install the extra (pip install -e '.[test,ray]'; scripts/setup.sh does)",
                    pytrace=False)
    with _sigint_ignored():
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1},
                                                         "include_dashboard": False})
    try:
        with _sigint_ignored():
            special = c.add_node(num_cpus=1, resources={"gpu:fake": 1, "pool": 1})
            plain = c.add_node(num_cpus=1, resources={"pool": 1, "plain": 1})
        c.wait_for_nodes()
        c.special, c.plain = special, plain
        yield c
    finally:
        c.shutdown()


def config(tmp_path: Path, tag: str, servers: list[dict], **load) -> Path:
    cfg = {"name": "ray-test", "results_dir": str(tmp_path / "results"), "telemetry": False,
           "defaults": {"engine": str(SPEC), "model": "tiny", "served_model_name": tag},
           "servers": servers,
           "load": {"concurrency": [1, 2], "requests": 6, "input_tokens": 24, "output_tokens": 10, "warmup": 1, **load}}
    p = tmp_path / f"sweep-{len(list(tmp_path.glob('sweep-*.yaml')))}.yaml"  # no tag: only servers carry it
    p.write_text(yaml.safe_dump(cfg))
    return p


def sweep(cfg: Path, *args: str, address: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    extra = ["--executor", "ray", "--address", address] if address else []
    return subprocess.run([*SB, "sweep", str(cfg), *extra, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start(cfg: Path, address: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*SB, "sweep", str(cfg), "--executor", "ray", "--address", address, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def cells(d: Path) -> dict[str, dict]:
    try:
        return {c["id"]: c for c in json.loads((d / "index.json").read_text())["cells"]}
    except (OSError, ValueError):
        return {}


def wait_for(pred, proc: subprocess.Popen, what: str, timeout: float = 480):  # Ray workers import torch: slow on a busy 2-core host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := pred()):
            return got
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{what} never happened: {proc.communicate()[1][-3000:]}")


def files_of(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def test_ray_sweep_matches_local_and_places_groups_by_resource(cluster, tmp_path):
    tag = f"ray-{uuid.uuid4().hex[:8]}"
    servers = [{"server_args": ["--ttft-ms", "20", "--itl-ms", "5"]},
               {"server_args": ["--ttft-ms", "30", "--itl-ms", "5"], "resources": {"gpu:fake": 1}}]
    cfg = config(tmp_path, tag, servers)
    local = subprocess.Popen([*SB, "sweep", str(cfg), "--name", "local"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    on_ray = sweep(cfg, "--name", "ray", address=cluster.address)
    out, err = local.communicate(timeout=240)
    assert local.returncode == 0, err[-2000:]
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    rdir, ldir = tmp_path / "results" / "ray", tmp_path / "results" / "local"
    assert on_ray.stdout.strip().splitlines()[-1] == str(rdir)
    rc, lc = cells(rdir), cells(ldir)
    assert set(rc) == set(lc) and len(rc) == 4
    ridx, lidx = (json.loads((d / "index.json").read_text()) for d in (rdir, ldir))
    assert [g["server"] for g in ridx["groups"]] == [g["server"] for g in lidx["groups"]]
    assert all(g["status"] == "done" and g["launches"] == 1 for g in ridx["groups"])
    for cid in rc:
        assert rc[cid]["status"] == lc[cid]["status"] == "done"
        assert files_of(rdir / rc[cid]["run_dir"]) == files_of(ldir / lc[cid]["run_dir"])
        rs, ls = (json.loads((d / c[cid]["run_dir"] / "summary.json").read_text()) for d, c in ((rdir, rc), (ldir, lc)))
        assert rs["completed"] == ls["completed"] == 6
        run = json.loads((rdir / rc[cid]["run_dir"] / "run.json").read_text())
        assert run["cell"]["id"] == cid and run["node"]["id"] == rc[cid]["node_id"]
        assert run["host"]["hostname"] == run["node"]["hostname"]  # that node's own host facts
        assert run["config"]["load"]["seed"] == json.loads((ldir / lc[cid]["run_dir"] / "run.json").read_text())[
            "config"]["load"]["seed"]
    # the group asking for gpu:fake ran on the one node that has it; the other went anywhere
    assert {rc[c]["node_id"] for c in rc if c.startswith("g01")} == {cluster.special.node_id}
    assert (rdir / "servers" / "g01" / "server.log").stat().st_size > 0  # server logs came back too
    assert "### c=1" in (rdir / "sweep.md").read_text()
    assert not emulators_alive(tag)


def test_resources_no_node_has_fail_at_once(cluster, tmp_path):
    tag = f"ray-{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path, tag, [{"server_args": [], "resources": {"gpu:h100": 8}}])
    t0 = time.monotonic()
    p = sweep(cfg, address=cluster.address, timeout=120)
    assert p.returncode == 1
    assert "no node of the Ray cluster" in p.stderr and "gpu:h100=8" in p.stderr and "gpu:fake" in p.stderr
    assert time.monotonic() - t0 < 60  # reported, not left pending
    c = cells(tmp_path / "results" / "ray-test")
    assert {x["status"] for x in c.values()} == {"failed"} and all(x["attempts"] == 0 for x in c.values())


def test_ctrl_c_stops_every_remote_server_and_resume_finishes(cluster, tmp_path):
    tag = f"ray-{uuid.uuid4().hex[:8]}"
    slow = ["--ttft-ms", "50", "--itl-ms", "60"]
    cfg = config(tmp_path, tag, [{"server_args": slow, "resources": {"gpu:fake": 1}},
                                 {"server_args": ["--ttft-ms", "51", "--itl-ms", "60"], "resources": {"plain": 1}}],
                 concurrency=[1], requests=6, output_tokens=20)
    sdir = tmp_path / "results" / "ray-test"
    proc = start(cfg, cluster.address)
    wait_for(lambda: sum(c["status"] == "running" for c in cells(sdir).values()) == 2 and len(emulators_alive(tag)) == 2,
             proc, "both groups measuring")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "--resume" in err
    deadline = time.monotonic() + 10
    while emulators_alive(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not emulators_alive(tag)  # on every node
    assert {c["status"] for c in cells(sdir).values()} == {"interrupted"}
    resumed = sweep(cfg, "--resume", address=cluster.address)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = cells(sdir)
    assert all(c["status"] == "done" and c["attempts"] == 2 for c in after.values())
    assert len(list((sdir / "runs" / ".attempts").iterdir())) == 2  # the interrupted attempts are kept
    assert not emulators_alive(tag)


def test_node_lost_mid_cell_is_retried_on_another_node_shared_results(cluster, tmp_path):
    tag = f"ray-{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path, tag, [{"server_args": ["--ttft-ms", "30", "--itl-ms", "60"], "resources": {"pool": 1}}],
                 concurrency=[1, 2], requests=6, output_tokens=20)
    sdir = tmp_path / "results" / "ray-test"
    # nodes write run dirs straight into the (here: trivially) shared results dir
    proc = start(cfg, cluster.address, "--max-retries", "1", "--results-shared", str(tmp_path / "results"))
    row = wait_for(lambda: (c := cells(sdir).get("g00-c0002-r0")) and c["status"] == "running" and c,
                   proc, "second cell running")
    lost = next(n for n in (cluster.special, cluster.plain) if n.node_id == row["node_id"])
    time.sleep(0.3)
    cluster.remove_node(lost)  # its raylet and workers die, as with a machine gone
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "node lost" in err and "retrying 1 cell(s)" in err
    after = cells(sdir)
    assert after["g00-c0001-r0"]["attempts"] == 1 and after["g00-c0001-r0"]["node_id"] == lost.node_id
    again = after["g00-c0002-r0"]
    assert again["status"] == "done" and again["attempts"] == 2 and again["node_id"] != lost.node_id
    assert (sdir / "runs" / ".attempts" / "g00-c0002-r0.1").is_dir()  # what the lost attempt left is kept
    assert (sdir / "servers" / "g00" / "server.log").is_file()
    summary = json.loads((sdir / again["run_dir"] / "summary.json").read_text())
    assert summary["completed"] == 6
    deadline = time.monotonic() + 20  # the dead node's server is stopped by its reaper
    while emulators_alive(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not emulators_alive(tag)


@pytest.mark.integration
def test_real_vllm_cpu_group_on_ray(cluster, tmp_path):
    from tests.integration.conftest import require_vllm

    require_vllm()
    cfg = {"name": "ray-vllm", "results_dir": str(tmp_path / "results"), "telemetry": False,
           "servers": [{"engine": "vllm", "model": "tiny", "resources": {"pool": 1},
                        "launcher_options": {"ready_timeout_s": 900}}],  # cold start on 2 shared cores
           "load": {"concurrency": [2], "requests": 4, "input_tokens": 32, "output_tokens": 8, "warmup": 1}}
    p = tmp_path / "vllm.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = sweep(p, address=cluster.address, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    c = cells(tmp_path / "results" / "ray-vllm")["g00-c0002-r0"]
    run_dir = tmp_path / "results" / "ray-vllm" / c["run_dir"]
    run = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run["engine"]["name"] == "vllm" and run["engine"]["version"]
    assert run["node"]["id"] == c["node_id"] and "pool" in run["node"]["resources"]
    assert summary["completed"] == 4 and summary["failed"] == 0
    assert summary["output_tokens"]["achieved_mean"] == 8


def run_on_ray(cluster, emu_url: str, results: Path, workers: str, *extra: str) -> subprocess.Popen:
    import os

    return subprocess.Popen([*SB, "run", "--backend", "vllm", "--endpoint", emu_url, "--model", "tiny",
                             "--input-tokens", "24", "--warmup", "1", "--workers", workers, "--results-dir", str(results),
                             "--no-telemetry", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": cluster.address})


def test_run_workers_ray_spreads_one_load_over_nodes_on_one_clock(cluster, tmp_path):
    with start_emulator("openai", 30, 5, log=tmp_path / "emu.jsonl") as emu:
        proc = run_on_ray(cluster, emu.url, tmp_path / "res", "ray:2", "--requests", "40", "--concurrency", "4",
                          "--output-tokens", "8")
        out, err = proc.communicate(timeout=600)
        emu.stop()
        log = {str(r["id"]): r for r in emu.records()}  # ids: the record index (and the probe's own)
    assert proc.returncode == 0, err[-3000:]
    run_dir = Path(out.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    split = summary["client"]["split"]
    assert summary["completed"] == 40 and summary["failed"] == 0 and summary["client"]["workers"] == 2
    assert run["workers"]["split"] == split and "Ray actor" in run["workers"]["reason"]
    assert len({s["node_id"] for s in split}) == 2  # SPREAD: two nodes
    assert [s["requests"] for s in split] == [20, 20] and [s["concurrency"] for s in split] == [2, 2]
    unc_ns = max(s["clock_uncertainty_ms"] for s in split) * 1e6
    assert summary["client"]["clock_uncertainty_ms"] == max(s["clock_uncertainty_ms"] for s in split)
    for s in split:  # one host: the true offset is 0, and the measured one is within its bound
        assert abs(s["clock_offset_ms"]) <= s["clock_uncertainty_ms"] + 0.05
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    # merged onto the driver's clock: each send stamp lies just before the emulator's own
    # arrival stamp (the same CLOCK_MONOTONIC here), whichever actor sent it
    for r in recs:
        assert -unc_ns - 2e6 < log[str(r.index)]["arrival_ns"] - r.sent_ns < 50e6, r.index
    # one agreed start: each actor's first send (shares are round-robin by index)
    firsts = [min(r.sent_ns for r in recs if r.index % 2 == w) for w in (0, 1)]
    assert abs(firsts[0] - firsts[1]) < unc_ns + 20e6
    assert 29 <= summary["ttft_ms"]["p50"] < 45 and summary["output_tokens"]["achieved_mean"] == 8


def test_run_workers_ray_actors_spool_into_the_run_dir_they_see(cluster, tmp_path, monkeypatch):
    """Actors on this host read the driver's token in the run dir and spool there, as --workers N
    processes do (a killed run keeps those batches: tests/unit/test_spool.py); the spools and the
    token are gone once requests.parquet holds the rows."""
    monkeypatch.setenv("SERVEBENCH_SPOOL_MIN_TOKENS", "0")  # a small run spools too
    res = tmp_path / "res"
    with start_emulator("openai", 5, 20) as emu:
        proc = run_on_ray(cluster, emu.url, res, "ray:2", "--requests", "160", "--concurrency", "4",
                          "--output-tokens", "10")
        spools = wait_for(lambda: [p for p in res.glob("*/requests.spool.w*.arrow") if p.stat().st_size > 4000],
                          proc, "an actor's spool batch in the run dir")
        assert (spools[0].parent / "requests.spool.id").exists()
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir == spools[0].parent
    assert not list(run_dir.glob("requests.spool*"))  # spools, lag stamps and the token all removed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] == 160 and summary["client"]["workers"] == 2
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    assert len(recs) == 160 and all(r.ok and len(r.token_ns) == 10 for r in recs)


def test_run_workers_ray_node_lost_fails_its_share_and_keeps_the_rest(cluster, tmp_path):
    extra = cluster.add_node(num_cpus=1, resources={"extra": 1})
    cluster.wait_for_nodes()
    emu_log = tmp_path / "emu.jsonl"
    with start_emulator("openai", 30, 60, log=emu_log, flush_s=0.1) as emu:
        # one actor per one-CPU node (an earlier test may have removed one): one is on the node removed below
        n = len(cluster.list_all_nodes())
        proc = run_on_ray(cluster, emu.url, tmp_path / "res", f"ray:{n}", "--requests", str(20 * n),
                          "--concurrency", str(n), "--output-tokens", "20")
        wait_for(lambda: len(emu.records()) >= 8, proc, "load running")
        cluster.remove_node(extra)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "load actor" in line, err[-2000:]
    run_dir = Path(out.strip().splitlines()[-1])
    split = json.loads((run_dir / "run.json").read_text())["workers"]["split"]
    lost = next(w for w, s in enumerate(split) if s["node_id"] == extra.node_id)
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    theirs = [r for r in recs if r.index % n == lost]
    assert theirs and all(r.error and r.error.startswith("lost with its load worker") for r in theirs)
    assert sum(r.ok for r in recs if r.index % n != lost) >= 2  # the others' measured requests are kept
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] >= len(theirs)
