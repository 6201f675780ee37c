"""The remote half of the Ray executor: one server group run by `run_group` on the node Ray
placed it on, the load generator beside its server (same process, same host), exactly as a
local sweep runs it. Results travel back to the driver as events on a Ray queue; the driver
owns the index (ray_executor.py).

Run directories are written to a node-local temp dir and each finished cell's files are sent
whole in its `finished` event, or, with a shared results dir, written straight into the sweep
directory every node mounts at the same path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from servebench.load.rayconnect import node_facts
from servebench.signals import cancellable
from servebench.sweep.group import LimitSpec, run_group
from servebench.sweep.plan import Cell, Group


def pack(d: Path) -> dict[str, bytes]:
    """Every file under d, by relative path (what a run directory holds is small: records,
    summary, run.json, logs)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], d: Path) -> None:
    for rel, data in files.items():
        p = (d / rel).resolve()
        if d.resolve() not in p.parents:  # never outside the run directory
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


class RemoteHost:
    """GroupHost on the node: every callback becomes an event for the driver."""

    def __init__(self, queue, group: Group, base: Path, shared: bool, node: dict, done: dict[str, dict]) -> None:
        self.queue, self.group, self.base, self.shared, self.node, self.done = queue, group, base, shared, node, done

    def _send(self, *event: Any) -> None:
        self.queue.put(event)

    def cell_dir(self, cell: Cell) -> Path:
        if self.shared:  # the sweep directory itself: an earlier attempt is kept beside it, as locally
            from servebench.sweep.index import SweepIndex

            return SweepIndex(self.base, {}).cell_dir(cell.id)
        d = self.base / "runs" / cell.id
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def server_dir(self, group: Group) -> Path:
        d = self.base / "servers" / group.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def started(self, cell: Cell, run_dir: Path) -> None:
        self._send("started", cell, self.node)

    def finished(self, cell: Cell, status: str, error: str | None, run_dir: Path | None, summary: dict | None) -> None:
        files = None
        if run_dir is not None:
            _stamp_node(run_dir, self.node)
            if not self.shared:
                files = pack(run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
        self._send("finished", cell, status, error, run_dir is not None, files, summary, self.node)

    def done_summary(self, cell: Cell) -> dict | None:
        got = self.done.get(cell.id)
        if not got or got["load"] != cell.as_dict()["load"]:
            return None  # a probe of another load is no answer for this one
        return got["summary"]

    def group_update(self, group: Group, **fields: Any) -> None:
        self._send("group", group.id, fields)

    def phase(self, msg: str) -> None:
        self._send("phase", group_msg(self.group, self.node, msg))

    def progress(self, done: int, total: int) -> None:
        pass  # per-request progress stays on the node: one event per request would flood the queue


def group_msg(group: Group, node: dict, msg: str) -> str:
    return msg if msg.startswith(group.id) else f"{group.id} @ {node['label']}: {msg}"


def _stamp_node(run_dir: Path, node: dict) -> None:
    """run.json says which node measured the cell (its host facts are already there)."""
    from servebench.store import runfiles

    path = run_dir / "run.json"
    try:
        data = runfiles.read_json(path)
    except Exception:  # noqa: BLE001 - no run.json: nothing to stamp
        return
    data["node"] = {k: v for k, v in node.items() if k != "label"}
    runfiles.write_json(path, data)


def run_remote_group(cfg, group: Group, limit: LimitSpec | None, queue, shared_dir: str | None,
                     done: dict[str, dict]) -> dict[str, Any]:
    """The Ray task body. Returns the group row (and the server logs when not shared)."""
    with cancellable():  # the driver's Ctrl-C (ray.cancel) reaches run_group as KeyboardInterrupt
        return _run_remote_group(cfg, group, limit, queue, shared_dir, done)


def _run_remote_group(cfg, group: Group, limit: LimitSpec | None, queue, shared_dir: str | None,
                      done: dict[str, dict]) -> dict[str, Any]:
    import ray

    node = node_facts()
    reaper = subprocess.Popen([sys.executable, "-m", "servebench.sweep.reaper", str(os.getpid())],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    shared = shared_dir is not None
    base = Path(shared_dir) if shared else Path(tempfile.mkdtemp(prefix=f"servebench-{group.id}-"))
    gpu_ids = [int(g) for g in ray.get_gpu_ids() if str(g).isdigit()]
    if group.server.n_gpus and gpu_ids:  # the GPUs Ray gave this task, whatever the config pinned
        group = Group(group.id, group.server.model_copy(update={"gpus": gpu_ids}), group.cells)
    host = RemoteHost(queue, group, base, shared, node, done)
    out: dict[str, Any] = {"node": node}
    try:
        out["row"] = run_group(cfg, group, host, limit)
        return out
    finally:
        if not shared:
            try:
                host._send("server_files", group.id, pack(base / "servers" / group.id))
            except Exception:  # noqa: BLE001 - logs are a courtesy, never the reason a group fails
                pass
            shutil.rmtree(base, ignore_errors=True)
        reaper.terminate()
        reaper.wait()
