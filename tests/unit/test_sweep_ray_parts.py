"""The Ray executor's pure parts: what a group asks Ray for, why no node can hold it, how
run files travel, and the reaper that stops a dead worker's servers (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from servebench.sweep.config import ServerPoint
from servebench.sweep.plan import Group
from servebench.sweep.ray_executor import demand, unmet
from servebench.sweep.ray_remote import pack, unpack


def group(**server) -> Group:
    return Group("g00", ServerPoint(engine="vllm", **server), [])


def test_demand_maps_gpus_accelerator_type_and_custom_resources():
    g = group(gpu_count=8, hardware="a800-80gb", resources={"instance:p4d.24xlarge": 1})
    assert demand(g, 2.0, {"a800-80gb": "A800"}) == {"CPU": 2.0, "GPU": 8.0, "accelerator_type:A800": 0.001,
                                                     "instance:p4d.24xlarge": 1}
    assert demand(group(gpus=[0, 1]), 1.0, {}) == {"CPU": 1.0, "GPU": 2.0}
    assert demand(group(hardware="cpu"), 1.0, {"a100": "A100"}) == {"CPU": 1.0}  # unmapped label: no ask


def test_unmet_needs_one_node_holding_everything():
    nodes = [{"Alive": True, "Resources": {"CPU": 8, "GPU": 4, "gpu:a800": 1}},
             {"Alive": True, "Resources": {"CPU": 8, "GPU": 8}},
             {"Alive": False, "Resources": {"CPU": 8, "GPU": 8, "gpu:a800": 1}}]
    assert unmet({"CPU": 1, "GPU": 8}, nodes) is None
    why = unmet({"CPU": 1, "GPU": 8, "gpu:a800": 1}, nodes)  # split over two nodes, or on a dead one: no
    assert why.startswith("no node of the Ray cluster (2 alive) has CPU=1, GPU=8, gpu:a800=1")
    assert "gpu:a800" in why.split("resources there:")[1]


def test_the_node_reuses_a_probe_only_for_the_load_it_was_measured_under(tmp_path):
    """The driver sends the probes already done; the node's search asks by cell id, and an id
    names a level, not its requests or lengths: a reused probe of another load mixed two workloads."""
    from servebench.sweep.plan import Cell, LoadPoint
    from servebench.sweep.ray_remote import RemoteHost

    cell = Cell("g00-lim-c0004", "g00", LoadPoint("concurrency", 4, None, 10, None, 512, 128, 0, 10004000), search=True)
    summary = {"completed": 10}
    host = RemoteHost(None, Group("g00", ServerPoint(engine="vllm")), tmp_path, True, {},
                      {cell.id: {"load": cell.as_dict()["load"], "summary": summary}})
    assert host.done_summary(cell) is summary
    other = Cell(cell.id, "g00", LoadPoint("concurrency", 4, None, 10, None, 16, 128, 0, 10004000), search=True)
    assert host.done_summary(other) is None
    assert host.done_summary(Cell("g00-lim-c0008", "g00", cell.load, search=True)) is None


def test_pack_unpack_round_trip_and_stays_inside(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    files = pack(src)
    assert files == {"a.json": b"{}", "sub/b.bin": b"\x00\x01"}
    dst = tmp_path / "dst"
    unpack({**files, "../escape.txt": b"x"}, dst)
    assert pack(dst) == files and not (tmp_path / "escape.txt").exists()


PARENT = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
print(p.pid, flush=True)
time.sleep(120)
"""


def test_reaper_stops_the_servers_of_a_killed_worker():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    server = int(parent.stdout.readline())
    reaper = subprocess.Popen([sys.executable, "-m", "servebench.sweep.reaper", str(parent.pid)],
                              start_new_session=True)
    try:
        time.sleep(1.5)  # it has seen the server
        assert psutil.pid_exists(server)
        os.kill(parent.pid, signal.SIGKILL)  # no finally runs, as with a force-cancelled Ray task
        parent.wait()
        assert reaper.wait(timeout=20) == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(server):
            time.sleep(0.1)
        assert not _alive(server)
    finally:
        for p in (parent, reaper):
            p.kill()
        if _alive(server):
            os.kill(server, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_ray_options_need_the_ray_executor(tmp_path):
    from click.testing import CliRunner

    from servebench.sweep.cli import sweep

    cfg = tmp_path / "s.yaml"
    cfg.write_text("servers: [{engine: vllm}]\n")
    r = CliRunner().invoke(sweep, [str(cfg), "--address", "auto"])
    assert r.exit_code == 2 and "error: --address applies to --executor ray" in r.output
    r = CliRunner().invoke(sweep, [str(cfg), "--executor", "ray", "--results-shared", str(tmp_path / "a"),
                                   "--results-dir", str(tmp_path / "b")])
    assert r.exit_code == 2 and "name different directories" in r.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unreachable_ray_address_fails_at_once(tmp_path):
    import socket

    from click.testing import CliRunner

    from servebench.sweep.cli import sweep

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"results_dir: {tmp_path / 'r'}\nservers: [{{engine: vllm}}]\n")
    t0 = time.monotonic()
    r = CliRunner().invoke(sweep, [str(cfg), "--executor", "ray", "--address", f"ray://127.0.0.1:{port}"])
    assert r.exit_code == 2, r.output
    assert f"error: cannot reach the Ray cluster at ray://127.0.0.1:{port}: Connection refused" in r.output
    assert time.monotonic() - t0 < 10
