"""The sweep directory's index.json: one row per server group and per cell, rewritten
atomically after every change, so a crash, Ctrl-C or reboot loses no finished cell and a
re-run knows exactly what is left (docs/sweep.md has the format)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from servebench.store import runfiles
from servebench.sweep.plan import Cell, Group, Plan, search_point_now

INDEX_SCHEMA = 1
DONE = "done"


def headline(summary: dict) -> dict[str, Any]:
    """The numbers a sweep table shows per cell, straight from summary.json."""
    out: dict[str, Any] = {k: summary.get(k) for k in ("request_throughput", "output_token_throughput", "completed",
                                                         "failed", "error_rate")}
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token"):
        d = summary.get(metric) or {}
        for p in ("p50", "p99"):
            out[f"{metric}_{p}"] = d.get(p)
    out["output_tokens_achieved_mean"] = (summary.get("output_tokens") or {}).get("achieved_mean")
    return out


class ResultsRefused(RuntimeError):
    """The results disk refused a sweep's files (full, read-only): the sweep stops, one line."""


class IndexWriteError(ResultsRefused):
    """index.json could not be written."""


def refused(what: str, cause: OSError, cls: type[ResultsRefused] = ResultsRefused) -> ResultsRefused:
    """`results disk full: cannot write X (No space left on device)` (or the refusal's own words)."""
    from servebench.store.salvage import disk_full, one_line

    kind = "results disk full" if disk_full(cause) else "results dir refused a write"
    return cls(f"{kind}: {what} ({one_line(cause)})")


def _write_in_place(path: Path, data: dict) -> bool:
    """The index written over the old one when a temporary copy has no room: only when it
    fits in the blocks the old file already holds (compact if need be), so the write takes no
    new space and cannot stop half-way for want of it."""
    try:
        room = path.stat().st_blocks * 512
        for text in (json.dumps(data, indent=2, default=str) + "\n", json.dumps(data, default=str)):
            raw = text.encode()
            if len(raw) <= room:
                with open(path, "r+b") as f:
                    f.write(raw)
                    f.truncate()
                    f.flush()
                    os.fsync(f.fileno())
                return True
    except OSError:
        pass
    return False


class SweepIndex:
    """In-memory index + its file. Thread-safe: a Ray executor updates it from callbacks."""

    def __init__(self, sweep_dir: Path, data: dict[str, Any]) -> None:
        self.dir = Path(sweep_dir)
        self.data = data
        self._lock = threading.Lock()
        self.write_error: IndexWriteError | None = None

    @property
    def path(self) -> Path:
        return self.dir / "index.json"

    @classmethod
    def load(cls, sweep_dir: Path) -> "SweepIndex":
        return cls(sweep_dir, runfiles.read_json(Path(sweep_dir) / "index.json"))

    @classmethod
    def create(cls, sweep_dir: Path, kind: str, name: str) -> "SweepIndex":
        data = {"schema_version": INDEX_SCHEMA, "kind": kind, "name": name,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "groups": [], "cells": [], "timing": {}}
        return cls(sweep_dir, data)

    def save(self) -> None:
        """Write index.json; an OSError becomes one IndexWriteError, raised once: the saves in
        the teardown after it (the group's row, the timing) stay quiet, so the user gets one
        line, not a chain of tracebacks (each still tries, and a later success clears it)."""
        with self._lock:
            try:
                runfiles.write_json(self.path, self.data)
            except OSError as e:
                if _write_in_place(self.path, self.data):
                    self.write_error = None
                    return
                first = self.write_error is None
                self.write_error = refused(f"cannot write {self.path}", e, IndexWriteError)
                if first:
                    raise self.write_error from None
                return
            self.write_error = None

    def settle(self, why: str) -> None:
        """Cells still marked running when the sweep stops on a write error: failed, with why
        (a resume runs them again); then one more try to write the index."""
        for c in self.data["cells"]:
            if c["status"] == "running":
                c["status"], c["error"] = "failed", why
        try:
            self.save()
        except IndexWriteError:
            pass

    # -- bookkeeping -------------------------------------------------------------------
    def group(self, gid: str) -> dict | None:
        return next((g for g in self.data["groups"] if g["id"] == gid), None)

    def cell(self, cid: str) -> dict | None:
        return next((c for c in self.data["cells"] if c["id"] == cid), None)

    def sync(self, plan: Plan) -> None:
        """Add the plan's groups and cells not yet listed; a listed cell whose parameters
        changed means the config changed under an existing sweep: refuse, never mix."""
        for g in plan.groups:
            row = self.group(g.id)
            server = g.server_dict()
            if row is None:
                self.data["groups"].append({"id": g.id, "server": server, "status": "pending", "error": None,
                                            "launch_s": None, "teardown_s": None, "launches": 0})
            elif row["server"] != server:
                raise ValueError(f"sweep {self.dir}: server group {g.id} was {row['server']['label']}, the config now "
                                 f"says {server['label']}; run the changed config under a new name")
            for c in g.cells:
                self.add_cell(c)
        self._check_probes(plan)

    def _check_probes(self, plan: Plan) -> None:
        """A limit search's cells are made on the fly, so add_cell never sees them against the
        config: a resumed search would judge probes of the old load beside ones of the new."""
        for row in self.data["cells"]:
            now = search_point_now(plan.config, row["load"]) if row.get("search") else None
            if now is not None and now.as_dict() != row["load"]:
                raise ValueError(f"sweep {self.dir}: limit-search cell {row['id']} had load {row['load']}, the config "
                                 f"now says {now.as_dict()}; run the changed config under a new name")

    def add_cell(self, c: Cell) -> dict:
        row = self.cell(c.id)
        d = c.as_dict()
        if row is None:
            row = {**d, "status": "pending", "error": None, "run_dir": None, "attempts": 0, "node": None,
                   "headline": None}
            self.data["cells"].append(row)
        elif row["load"] != d["load"]:
            raise ValueError(f"sweep {self.dir}: cell {c.id} had load {row['load']}, the config now says {d['load']}; "
                             "run the changed config under a new name")
        return row

    def todo(self, plan: Plan) -> Plan:
        """The plan less the cells already done (failed and interrupted ones run again)."""
        groups = [Group(g.id, g.server, [c for c in g.cells if (self.cell(c.id) or {}).get("status") != DONE])
                  for g in plan.groups]
        return Plan(plan.config, [g for g in groups if g.cells])

    def to_search(self, plan: Plan, limit: Any) -> Plan:
        """The plan's groups a limit search (`limit`: group.LimitSpec) has to run: those with no
        answer yet, or one for another SLO or --limit-by, or with a probe cell that failed (a
        level judged on a load that did not complete). Not by the group's status: a group done
        measuring its configured cells has not searched."""
        def left(g: Group) -> bool:
            unsettled = any(c["group"] == g.id and c.get("search") and c["status"] != DONE and not self.superseded(c)
                            for c in self.data["cells"])
            return unsettled or not _answers((self.group(g.id) or {}).get("limit"), limit)

        return Plan(plan.config, [g for g in plan.groups if left(g)])

    def superseded(self, cell: dict) -> bool:
        """A probe not done that the group's last search did not use: a level an earlier search
        tried (and failed at) and the last one never reached. It stays in the index with its
        error; it neither fails the sweep nor sends every resume into the search again."""
        block = (self.group(cell["group"]) or {}).get("limit") if cell.get("search") else None
        if not block or "tried" not in block or cell["status"] == DONE:
            return False
        load = cell.get("load") or {}
        level, repeat = load.get(block.get("by")), int(load.get("repeat") or 0)
        return not any(t["level"] == level and repeat < t.get("runs", 1) for t in block.get("tried") or [])

    def cell_dir(self, cid: str) -> Path:
        """A fresh run directory for the cell; an earlier attempt's is kept beside it."""
        d = self.dir / "runs" / cid
        try:
            if d.exists():
                n = 1
                while (keep := self.dir / "runs" / ".attempts" / f"{cid}.{n}").exists():
                    n += 1
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(d), str(keep))
            d.mkdir(parents=True)
        except OSError as e:
            raise refused(f"cannot make {d}", e) from None
        return d

    def mark_cell(self, cid: str, status: str, **fields: Any) -> None:
        row = self.cell(cid)
        assert row is not None, cid
        row["status"] = status
        row.update(fields)
        self.save()

    def mark_group(self, gid: str, **fields: Any) -> None:
        row = self.group(gid)
        assert row is not None, gid
        row.update(fields)
        self.save()

    def counts(self, cells: list[dict] | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.data["cells"] if cells is None else cells:
            st = "superseded" if self.superseded(c) else c["status"]
            out[st] = out.get(st, 0) + 1
        return out


def _answers(block: dict | None, limit: Any) -> bool:
    """Whether a group's limit block answers the search asked now (the SLO compared as bounds:
    500ms and 0.5s are one limit)."""
    from servebench.sweep.slo_bounds import parse_slo

    if not block or block.get("by") != limit.by:
        return False
    try:
        return parse_slo(block.get("slo") or "") == limit.bounds
    except ValueError:
        return False
