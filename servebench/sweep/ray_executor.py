"""Where a plan runs, on Ray: each server group becomes one Ray task that asks for what its
server needs (GPUs, an accelerator type, custom resources such as `instance:p4d.24xlarge`),
so Ray places it on a host that has it; the group's load generator runs in that same task on
that same host. The driver (this machine) owns the sweep directory and its index: cells are
recorded as their events arrive (ray_remote.py), so resume works exactly as for a local sweep.

Faults: a group whose resources no node has is failed at once (never left pending); a task
lost with its node or worker has its unfinished cell marked failed and the rest of the group
re-run on whatever node Ray picks next (at most max_retries times); Ctrl-C cancels every task,
which raises KeyboardInterrupt in it so run_group tears its server down (even in a worker that
inherited SIGINT ignored: ray_remote.py, signals.cancellable), and force-kills
those that do not end within cancel_grace_s (the reaper then stops their servers)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from servebench.sweep.local import ExecutorError, LocalHost, Progress, account
from servebench.sweep.group import LimitSpec
from servebench.sweep.index import SweepIndex
from servebench.sweep.plan import Cell, Group, Plan
from servebench.sweep.ray_remote import run_remote_group, unpack


def demand(group: Group, num_cpus: float, accelerator_types: dict[str, str]) -> dict[str, float]:
    """The Ray resources one group's task asks for."""
    s = group.server
    out: dict[str, float] = {"CPU": num_cpus}
    if s.n_gpus:
        out["GPU"] = float(s.n_gpus)
    if s.hardware and s.hardware in accelerator_types:
        out[f"accelerator_type:{accelerator_types[s.hardware]}"] = 0.001  # what Ray's accelerator_type asks
    out.update(s.resources)
    return out


def unmet(want: dict[str, float], nodes: list[dict]) -> str | None:
    """Why no alive node can hold `want` (None: one can)."""
    alive = [n for n in nodes if n.get("Alive")]
    for n in alive:
        have = n.get("Resources", {})
        if all(have.get(k, 0.0) >= v for k, v in want.items()):
            return None
    ask = ", ".join(f"{k}={v:g}" for k, v in want.items())
    custom = sorted({k for n in alive for k in n.get("Resources", {})
                     if not k.startswith(("node:", "memory", "object_store_memory"))})
    return (f"no node of the Ray cluster ({len(alive)} alive) has {ask} "
            f"(resources there: {', '.join(custom) or 'none'})")


class DriverHost(LocalHost):
    """LocalHost fed by remote events: several cells run at once, each on its own node."""

    def __init__(self, index: SweepIndex, progress: Progress, phase: Callable[[str], None], shared: bool) -> None:
        super().__init__(index, progress, phase)
        self.shared = shared
        self._t0: dict[str, float] = {}
        self._dirs: dict[str, Path] = {}

    def remote_started(self, cell: Cell, node: dict) -> None:
        row = self.index.add_cell(cell)
        run_dir = self.index.dir / "runs" / cell.id if self.shared else self.index.cell_dir(cell.id)
        self._dirs[cell.id] = run_dir
        if cell.search:
            self.prog.total += 1
        self._t0[cell.id] = time.perf_counter()
        label = self.index.group(cell.group)["server"]["label"]
        rep = f" repeat {cell.load.repeat}" if cell.load.repeat else ""
        self.prog.emit(f"[{self.prog.done + 1}/{self.prog.total}] {cell.id}  {label}  {cell.load.level}{rep}"
                       f"  on {node['label']}{self.prog.eta()}")
        self.index.mark_cell(cell.id, "running", run_dir=str(run_dir.relative_to(self.index.dir)),
                             attempts=row.get("attempts", 0) + 1, node=node["label"], node_id=node["id"], error=None)

    def remote_finished(self, cell: Cell, status: str, error: str | None, had_dir: bool, files: dict | None,
                        summary: dict | None) -> None:
        run_dir = self._dirs.pop(cell.id, None) if had_dir else None
        if run_dir is not None and files is not None:
            unpack(files, run_dir)
        t0 = self._t0.pop(cell.id, None)
        if t0 is not None:
            self.measure_s += time.perf_counter() - t0
            self.prog.done += 1
            self.prog.cell_s.append(time.perf_counter() - t0)
        self.finished(cell, status, error, run_dir, summary)

    def running(self, group_id: str) -> list[str]:
        return [cid for cid in self._t0 if self.index.cell(cid)["group"] == group_id]

    def lost(self, cid: str, error: str) -> None:
        """The node went away mid-cell: what reached the driver is kept, the cell is failed."""
        self._t0.pop(cid, None)
        run_dir = self._dirs.pop(cid, None)
        self.index.mark_cell(cid, "failed", error=error,
                             **({"run_dir": str(run_dir.relative_to(self.index.dir))} if run_dir else {}))
        self._phase(f"{cid}: failed: {error}")

    def new_attempt(self, group_id: str) -> None:
        self._base.pop(group_id, None)  # launch counts restart at 0 in the new task: add to the index's totals


@dataclass
class _Task:
    group: Group
    tries: int
    finished: set[str] = field(default_factory=set)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, results_shared: Path | None = None, max_retries: int | None = None,
                 cancel_grace_s: float | None = None) -> None:
        self.cli = {"address": address, "results_shared": results_shared, "max_retries": max_retries,
                    "cancel_grace_s": cancel_grace_s}

    def run(self, plan: Plan, index: SweepIndex, emit: Callable[[str], None], limit: LimitSpec | None = None,
            on_requests: Callable[[int, int], None] | None = None) -> None:
        import ray

        opts = plan.config.ray.model_copy(update={k: v for k, v in self.cli.items() if v is not None})
        shared = opts.results_shared is not None
        if shared and Path(opts.results_shared).resolve() not in index.dir.resolve().parents:
            raise ExecutorError(f"--results-shared {opts.results_shared}: the sweep directory {index.dir} is not "
                                "under it (give the same path as --results-dir)")
        from servebench.load.rayconnect import RayConnectError, connect

        try:
            connect(opts.address)
        except RayConnectError as e:
            raise ExecutorError(str(e)) from None
        t0 = time.perf_counter()
        host = DriverHost(index, Progress(len(plan.cells), emit), emit, shared)
        try:
            _Driver(ray, plan, host, limit, opts, emit).run()
        finally:
            account(index, time.perf_counter() - t0, host.measure_s)
            ray.shutdown()


class _Driver:
    """One invocation's group tasks: submitted, their events fed to the host as they arrive,
    each settled when it ends (retried when its node was lost), all cancelled on Ctrl-C."""

    def __init__(self, ray, plan: Plan, host: DriverHost, limit: LimitSpec | None, opts,
                 emit: Callable[[str], None]) -> None:
        from ray.util.queue import Queue

        self.ray, self.plan, self.host, self.limit, self.opts, self.emit = ray, plan, host, limit, opts, emit
        self.index = host.index
        self.queue = Queue(actor_options={"num_cpus": 0, **_on_head_node(ray)})
        self.task_fn = ray.remote(run_remote_group)
        self.active: dict[Any, _Task] = {}
        self.shared_dir = str(self.index.dir.resolve()) if opts.results_shared else None

    def run(self) -> None:
        ray, opts = self.ray, self.opts
        nodes = ray.nodes()
        self.emit(f"ray: {sum(1 for n in nodes if n.get('Alive'))} node(s), {len(self.plan.groups)} group(s)")
        for g in self.plan.groups:
            why = unmet(demand(g, opts.num_cpus, opts.accelerator_types), nodes)
            if why:
                self.emit(f"error: {g.id} {g.server.label}: {why}")
                for c in g.cells:
                    self.host.finished(c, "failed", why, None, None)
                self.index.mark_group(g.id, status="failed", error=why)
                continue
            self.submit(g, 0)
        try:
            while self.active:
                self.drain(0.25)
                ready, _ = ray.wait(list(self.active), num_returns=len(self.active), timeout=0)
                for ref in ready:
                    self.drain(0)  # a task's events are queued before it returns
                    self.settle(ref, self.active.pop(ref))
        except KeyboardInterrupt:
            self.cancel()
            raise

    def submit(self, group: Group, tries: int) -> None:
        want = demand(group, self.opts.num_cpus, self.opts.accelerator_types)
        gpus = want.pop("GPU", 0.0)
        cpus = want.pop("CPU")
        # with the load each was measured under: the node reuses one only for the same load (local.py)
        done = {c["id"]: {"load": c["load"], "summary": s} for c in self.index.data["cells"]
                if c["group"] == group.id and c.get("search") and (s := self.host.done_summary(_cell(c)))}
        ref = self.task_fn.options(num_cpus=cpus, num_gpus=gpus, resources=want or None, max_retries=0,
                                   name=f"servebench:{group.id}").remote(self.plan.config, group, self.limit,
                                                                         self.queue, self.shared_dir, done)
        self.active[ref] = _Task(group, tries)

    def handle(self, ev: tuple) -> None:
        kind, host = ev[0], self.host
        if kind == "started":
            host.remote_started(ev[1], ev[2])
        elif kind == "finished":
            _, cell, status, error, had_dir, files, summary, _node = ev
            host.remote_finished(cell, status, error, had_dir, files, summary)
            for t in self.active.values():
                if t.group.id == cell.group:
                    t.finished.add(cell.id)
        elif kind == "group":
            host.group_update(_group_of(self.plan, ev[1]), **ev[2])
        elif kind == "server_files":
            unpack(ev[2], host.server_dir(_group_of(self.plan, ev[1])))
        elif kind == "phase":
            self.emit(ev[1])

    def drain(self, wait_s: float) -> None:
        from ray.util.queue import Empty

        try:
            self.handle(self.queue.get(block=wait_s > 0, timeout=wait_s if wait_s > 0 else None))
        except Empty:
            return
        while (n := self.queue.qsize()) > 0:
            for ev in self.queue.get_nowait_batch(n):
                self.handle(ev)

    def settle(self, ref, task: _Task) -> None:
        from ray.exceptions import RayTaskError, TaskCancelledError

        g, host, max_retries = task.group, self.host, self.opts.max_retries
        try:
            self.ray.get(ref)
            return
        except TaskCancelledError:
            return  # interrupted cells were reported by the task itself
        except RayTaskError as e:  # servebench itself raised on the node: not a fault a retry mends
            why = f"group task failed on its node: {_last_line(e.cause if getattr(e, 'cause', None) else e)}"
            retry = False
        except Exception as e:  # noqa: BLE001 - NodeDiedError, WorkerCrashedError, ObjectLost...: node or worker lost
            why = f"node lost ({type(e).__name__})"
            retry = task.tries < max_retries
        for cid in host.running(g.id):
            host.lost(cid, why)
        left = [c for c in g.cells if c.id not in task.finished]
        if retry and (left or not g.cells):
            self.emit(f"{g.id}: {why}; retrying {len(left)} cell(s) (retry {task.tries + 1} of {max_retries})")
            host.new_attempt(g.id)
            self.submit(Group(g.id, g.server, left), task.tries + 1)
            return
        for c in left:
            if (self.index.cell(c.id) or {}).get("status") != "failed":
                host.finished(c, "failed", why if not retry else f"{why}; retries exhausted", None, None)
        self.index.mark_group(g.id, status="failed", error=why)

    def cancel(self) -> None:
        """Ctrl-C: every task gets KeyboardInterrupt and tears its server down; stragglers are
        force-killed (their reaper stops the server). A second Ctrl-C meanwhile is held."""
        from servebench.signals import shielded

        ray, active = self.ray, self.active
        with shielded():
            self.emit(f"interrupted: cancelling {len(active)} group task(s), stopping their servers")
            for ref in active:
                ray.cancel(ref, force=False)
            deadline = time.monotonic() + self.opts.cancel_grace_s
            while active and time.monotonic() < deadline:
                self.drain(0.25)
                ready, _ = ray.wait(list(active), num_returns=len(active), timeout=0)
                for ref in ready:
                    self.drain(0)
                    active.pop(ref)
            for ref in active:
                ray.cancel(ref, force=True)
            self.drain(0)
            for cid in list(self.host._t0):
                self.host.lost(cid, "interrupted by Ctrl-C")
                self.index.mark_cell(cid, "interrupted")


def _on_head_node(ray) -> dict:
    """The event queue lives on the head node, as Ray Train's state actor does: placed anywhere,
    losing a worker node takes every group's results with it. Not the driver's node: a driver on
    a host running several raylets may be attached to a worker's, and lose it."""
    head = "node:__internal_head__"
    try:
        if any(n.get("Alive") and head in n.get("Resources", {}) for n in ray.nodes()):
            return {"resources": {head: 0.001}}
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)}
    except Exception:  # noqa: BLE001 - an older Ray: let it place the queue
        return {}


def _group_of(plan: Plan, gid: str) -> Group:
    return next(g for g in plan.groups if g.id == gid)


def _cell(row: dict) -> Cell:
    from servebench.sweep.plan import LoadPoint

    return Cell(row["id"], row["group"], LoadPoint(**row["load"]), search=row.get("search", False))


def _last_line(e: BaseException) -> str:
    """A RayTaskError's text is the remote traceback: its last line names the exception."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
