"""The local executor: a plan's server groups one after another on this host, results straight
into the sweep directory. Other executors (ray_executor.py) build on its parts: Progress,
LocalHost, account. The executors by name: executor.py.

Time is accounted so a sweep can say what it spent waiting: server launch + ready +
teardown against the groups' time, start/stop + measuring (`overhead_share` in index.json)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

from servebench.sweep.group import GroupHost, LimitSpec, run_group
from servebench.sweep.index import DONE, SweepIndex, headline
from servebench.sweep.plan import Cell, Group, Plan


class Progress:
    """Cells done / total, the current cell, time left from the cells done so far."""

    def __init__(self, total: int, emit: Callable[[str], None], on_requests: Callable[[int, int], None] | None = None) -> None:
        self.total, self.emit, self.on_requests = total, emit, on_requests
        self.done = 0
        self.cell_s: list[float] = []
        self.t0 = time.perf_counter()
        self._cell_t0 = 0.0

    def start(self, label: str) -> None:
        self._cell_t0 = time.perf_counter()
        self.emit(f"[{self.done + 1}/{self.total}] {label}{self.eta()}")

    def end(self) -> None:
        self.done += 1
        self.cell_s.append(time.perf_counter() - self._cell_t0)

    def eta(self) -> str:
        if not self.cell_s:
            return ""
        left = (self.total - self.done) * sum(self.cell_s) / len(self.cell_s)
        return f"  (elapsed {_hms(time.perf_counter() - self.t0)}, ~{_hms(left)} left)"


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


_SUMMED = ("launches", "launch_s", "teardown_s")


class LocalHost(GroupHost):
    """Results straight into the sweep directory and its index."""

    def __init__(self, index: SweepIndex, progress: Progress, phase: Callable[[str], None]) -> None:
        self.index, self.prog, self._phase = index, progress, phase
        self.node = socket.gethostname()
        self.measure_s = 0.0
        self._t = 0.0
        self._base: dict[str, dict[str, float]] = {}

    def cell_dir(self, cell: Cell) -> Path:
        return self.index.cell_dir(cell.id)

    def server_dir(self, group: Group) -> Path:
        d = self.index.dir / "servers" / group.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def started(self, cell: Cell, run_dir: Path) -> None:
        row = self.index.add_cell(cell)  # search cells are made on the fly
        if cell.search:
            self.prog.total += 1
        self._t = time.perf_counter()
        self.prog.start(f"{cell.id}  {self.index.group(cell.group)['server']['label']}  {cell.load.level}"
                        f"{'' if not cell.load.repeat else f' repeat {cell.load.repeat}'}")
        self.index.mark_cell(cell.id, "running", run_dir=str(run_dir.relative_to(self.index.dir)),
                             attempts=row.get("attempts", 0) + 1, node=self.node, error=None)

    def finished(self, cell: Cell, status: str, error: str | None, run_dir: Path | None, summary: dict | None) -> None:
        if self.index.cell(cell.id) is None:
            self.index.add_cell(cell)
        if run_dir is not None and self._t:
            self.measure_s += time.perf_counter() - self._t
            self._t = 0.0
            self.prog.end()
        fields: dict[str, Any] = {"error": error, "headline": headline(summary) if summary else None}
        if run_dir is not None:
            fields["run_dir"] = str(run_dir.relative_to(self.index.dir))
        self.index.mark_cell(cell.id, status, **fields)
        if status != DONE:
            self._phase(f"{cell.id}: {status}: {error}")

    def done_summary(self, cell: Cell) -> dict | None:
        row = self.index.cell(cell.id)
        if not row or row["status"] != DONE or not row.get("run_dir") or row["load"] != cell.as_dict()["load"]:
            return None  # a probe of another load is no answer for this one
        from servebench.store.runfiles import load_summary

        from servebench.sweep.judge import with_samples

        try:  # a search cell measured before a resume is judged on its requests as it was then
            d = self.index.dir / row["run_dir"]
            return with_samples(load_summary(d), d)
        except Exception:  # noqa: BLE001 - unreadable: measure it again
            return None

    def group_update(self, group: Group, **fields: Any) -> None:
        # run_group counts this invocation; the index keeps totals over resumed invocations
        old = self.index.group(group.id) or {}
        base = self._base.setdefault(group.id, {k: old.get(k) or 0 for k in _SUMMED})
        for k in _SUMMED:
            if k in fields:
                fields[k] = base[k] + fields[k]
        self.index.mark_group(group.id, **fields)

    def phase(self, msg: str) -> None:
        self._phase(msg)

    def progress(self, done: int, total: int) -> None:
        if self.prog.on_requests:
            self.prog.on_requests(done, total)


class LocalExecutor:
    name = "local"

    def run(self, plan: Plan, index: SweepIndex, emit: Callable[[str], None], limit: LimitSpec | None = None,
            on_requests: Callable[[int, int], None] | None = None) -> None:
        prog = Progress(len(plan.cells), emit, on_requests)
        host = LocalHost(index, prog, emit)
        t0 = time.perf_counter()
        try:
            for group in plan.groups:
                run_group(plan.config, group, host, limit)
        finally:
            account(index, time.perf_counter() - t0, host.measure_s)


def account(index: SweepIndex, wall_s: float, measure_s: float) -> None:
    """Add this invocation's time to the sweep's totals (resumed sweeps add up)."""
    t = index.data.setdefault("timing", {})
    t["wall_s"] = t.get("wall_s", 0.0) + wall_s
    t["measure_s"] = t.get("measure_s", 0.0) + measure_s
    launch = sum((g.get("launch_s") or 0.0) for g in index.data["groups"])
    teardown = sum((g.get("teardown_s") or 0.0) for g in index.data["groups"])
    t["server_overhead_s"] = launch + teardown
    # Against the groups' own time (start/stop + measuring), not the wall: groups that run side
    # by side on several nodes add up past the wall time ("111.6 % of wall" said nothing).
    t["group_s"] = t["server_overhead_s"] + t["measure_s"]
    t["overhead_share"] = t["server_overhead_s"] / t["group_s"] if t["group_s"] else None
    t["invocations"] = t.get("invocations", 0) + 1
    index.save()


class ExecutorError(RuntimeError):
    """The executor cannot run here (a cluster unreachable, a bad option); one line."""
