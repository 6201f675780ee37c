"""One server group: launch once, measure every cell against it, tear down. The unit an
executor places (a local loop, or a Ray task on a host that has the group's hardware).

Between cells the engine's prefix cache is emptied where it has a route for it, and each
load point has its own prompt seed (plan.py), so no cell is served from an earlier one's
cache. A server that died between cells is started again once; a Ctrl-C stops the group
after marking the cell it interrupted, with the server torn down."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from servebench.analysis.verdict import EXIT_RESULTS
from servebench.errors import first_line
from servebench.run.orchestrate import RunError, measure, prepare
from servebench.run.session import ServerSession
from servebench.run.state import Prepared
from servebench.store import redact
from servebench.store.runfiles import load_summary
from servebench.sweep import limit as lim
from servebench.sweep.config import SweepConfig
from servebench.sweep.index import ResultsRefused
from servebench.sweep.judge import with_samples
from servebench.sweep.plan import Cell, Group, group_in_flight, run_config, search_point
from servebench.sweep.slo_bounds import parse_slo

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class GroupHost(Protocol):
    """Where a group's results go (the local index, or a Ray driver via the task's return)."""

    def cell_dir(self, cell: Cell) -> Path: ...
    def server_dir(self, group: Group) -> Path: ...
    def started(self, cell: Cell, run_dir: Path) -> None: ...
    def finished(self, cell: Cell, status: str, error: str | None, run_dir: Path | None, summary: dict | None) -> None: ...
    def done_summary(self, cell: Cell) -> dict | None: ...
    def group_update(self, group: Group, **fields: Any) -> None: ...
    def phase(self, msg: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...


class LimitSpec:
    """--max-load-under: search this group's load for the highest level meeting the SLO."""

    def __init__(self, slo: str, by: str = "concurrency", start: float | None = None, max_level: float = 1024,
                 repeats: int = 3) -> None:
        if not max_level > 0:
            raise ValueError(f"--max-level must be > 0 (the highest load the limit search tries), got {max_level:g}")
        self.text, self.bounds, self.by = slo, parse_slo(slo), by
        self.start, self.max_level, self.repeats = start, max_level, repeats


def run_group(cfg: SweepConfig, group: Group, host: GroupHost, limit: LimitSpec | None = None) -> dict[str, Any]:
    """Measure the group's cells (then the limit search, if asked); returns the group row."""
    try:  # a config the sweep's own check let through (pydantic's ValidationError is a ValueError)
        first = run_config(cfg, group.server, group.cells[0].load if group.cells else
                           search_point(cfg, 1, 0, "speed" if cfg.load.trace else "concurrency"), Path("."), "probe")
        p0 = prepare(first)  # fails the group before any server starts (bad tokenizer, prompts file)
    except (ValueError, OSError, RuntimeError) as e:
        return _fail_all(group, host, f"cannot prepare: {first_line(e)}")
    session = ServerSession(first, p0.spec, p0.api, p0.model_dir, log_dir=host.server_dir(group),
                            in_flight=group_in_flight(cfg, group, (search_point(cfg, limit.max_level, 0, limit.by),)
                                                      if limit is not None else ()))
    row: dict[str, Any] = {"launches": 0, "launch_s": 0.0, "teardown_s": 0.0, "status": "running", "error": None}

    def open_session() -> str | None:
        host.phase(f"{group.id} {group.server.label}: starting server")
        row["launches"] += 1
        try:
            session.open(host.phase)
            return None
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - any launch failure fails this group only
            return first_line(e)
        finally:
            row["launch_s"] += session.launch_s or 0.0
            host.group_update(group, **row)

    try:
        err = open_session()
        if err:
            session.close()
            row["teardown_s"] += session.teardown_s or 0.0
            _check_room(host.server_dir(group), err)
            return _fail_all(group, host, f"server did not start: {err}", row)
        dead = _run_cells(cfg, group, session, host, p0, open_session, row)
        if limit is not None and dead is None:
            row["limit"] = _search(cfg, group, session, p0.tokenizer, host, limit, open_session, row)
        row["status"], row["error"] = ("failed", dead) if dead else ("done", None)
    except ServerGone as e:
        # levels it could not reach are unknown, not misses: no answer, and --resume searches again
        row.update(status="failed", error=str(e), limit=None)
    except KeyboardInterrupt:
        row["status"], row["error"] = "interrupted", "interrupted by Ctrl-C"
        raise
    finally:
        t = time.perf_counter()
        try:
            session.close()  # a Ctrl-C held during a normal teardown is raised when it ends
        finally:
            row["teardown_s"] += time.perf_counter() - t
            # the server's log is the group's, not a run's: no run's writer scrubs it
            redact.scrub_dir(host.server_dir(group), redact.secret_values(
                {**first.launcher_options, **first.env}, first.server_args))
            host.group_update(group, **row)
    return row


# Less free space than this where the server's log goes: a failed start is the full disk's doing
# (the server could not write its log), not the server's; the next groups would fare no better.
_MIN_FREE = 1 << 20


def _check_room(log_dir: Path, err: str) -> None:
    import shutil

    try:
        free = shutil.disk_usage(log_dir).free
    except OSError:
        return
    if free < _MIN_FREE:
        raise ResultsRefused(f"results disk full: {free:,} bytes free in {log_dir}, where the server writes "
                             f"its log; it did not start ({err})")


class ServerGone(RuntimeError):
    """The server died and did not start again: what is left of the group cannot be measured."""


def _run_cells(cfg: SweepConfig, group: Group, session: ServerSession, host: GroupHost, p0: Prepared,
               reopen: Callable[[], str | None], row: dict) -> str | None:
    """The configured cells in turn; why the rest were failed when the server died for good."""
    for i, cell in enumerate(group.cells):
        err = _ensure_alive(session, reopen, row)
        if err:
            why = f"server died and did not restart: {err}"
            _fail_from(group, cell, host, why)
            return why
        # the first cell's prompts were built with the group's preparation: not again
        _measure_cell(cfg, group, cell, session, host, p0.tokenizer, p0 if i == 0 else None)
    return None


def _ensure_alive(session: ServerSession, reopen: Callable[[], str | None], row: dict) -> str | None:
    if session.alive():
        return None
    session.close()
    row["teardown_s"] += session.teardown_s or 0.0
    session.teardown_s = None  # open again
    return reopen()


def _measure_cell(cfg: SweepConfig, group: Group, cell: Cell, session: ServerSession, host: GroupHost,
                  tokenizer: PreTrainedTokenizerBase, prepared: Prepared | None = None, samples: bool = False) -> dict | None:
    """One cell measured and reported; its summary when it is done. `prepared`: the cell's
    prompts already built (the group's first cell); `samples`: with each request's latencies
    beside it (judge.with_samples), for the limit search."""
    run_dir = host.cell_dir(cell)
    rc = run_config(cfg, group.server, cell.load, run_dir.parent, cell.id)
    summary, status, error = None, "done", None
    try:
        # inside the try: a Ctrl-C delivered as started() returns (held in the index write's
        # fsync) must mark the cell interrupted, not leave index.json saying it is running
        host.started(cell, run_dir)
        if cfg.reset_cache:
            session.reset_cache()
        p = prepared or prepare(rc, tokenizer=tokenizer)
        info = {"cell": {"id": cell.id, "group": group.id, "server": group.server_dict(),
                         "load": cell.as_dict()["load"], "search": cell.search}}
        summary = measure(rc, p, session, run_dir, host.progress, host.phase, run_info=info).summary
    except RunError as e:
        if e.interrupted:
            # a load that ended before the Ctrl-C is measured: kept as done, not run again
            done = (e.summary or {}).get("status") == "complete"
            host.finished(cell, "done" if done else "interrupted", None if done else str(e), run_dir, e.summary)
            raise KeyboardInterrupt from None
        status, error, summary = "failed", str(e), e.summary
        if e.code == EXIT_RESULTS:  # the next cells would meet the same full disk: stop here
            host.finished(cell, status, error, run_dir, summary)
            raise ResultsRefused(error) from None
    except KeyboardInterrupt:  # before or after the measurement wrote its files: what is there
        host.finished(cell, "interrupted", "interrupted by Ctrl-C", run_dir, _summary(run_dir))
        raise
    except ResultsRefused:  # the index cannot be written (started()): the sweep stops, settle() says why
        raise
    except Exception as e:  # noqa: BLE001 - one cell's failure never stops the sweep
        status, error, summary = "failed", first_line(e), _summary(run_dir)
    host.finished(cell, status, error, run_dir, summary)
    if status != "done":
        return None
    return with_samples(summary, run_dir) if samples else summary


def _search(cfg: SweepConfig, group: Group, session: ServerSession, tokenizer, host: GroupHost, spec: LimitSpec,
            reopen, row: dict) -> dict:
    ld = cfg.load
    levels = {"concurrency": ld.concurrency, "rate": ld.rate, "speed": ld.trace.speed if ld.trace else []}[spec.by]
    start = min(spec.start or (min(levels) if levels else 1), spec.max_level)  # a cap under the config's levels wins
    seen: dict[float, tuple[str, dict | None]] = {}

    def at(level: float, repeat: int = 0) -> dict | None:
        cell = Cell("", group.id, search_point(cfg, level, repeat, spec.by), search=True)
        cell = replace(cell, id=f"{group.id}-lim-{cell.load.key}" + (f"-r{repeat}" if repeat else ""))
        done = host.done_summary(cell)
        if done is None:
            err = _ensure_alive(session, reopen, row)
            if err:
                raise ServerGone(f"server died and did not restart: {err}")
            done = _measure_cell(cfg, group, cell, session, host, tokenizer, samples=True)
        if repeat == 0:
            seen[level] = (cell.id, done)
        return done

    res = lim.search(at, spec.bounds, start=start, max_level=spec.max_level, integer=spec.by == "concurrency",
                     repeats=spec.repeats)
    out = lim.block(res, spec.text, spec.by, spec.repeats)
    if spec.by == "speed":  # what a capacity plan needs: the trace's own rate, and what binds at the limit
        cell_id, summary = seen.get(res.best, (None, None))
        out["at_limit"] = {"cell": cell_id, **(lim.closeness(spec.bounds, summary) or {})} if summary else None
        out["trace"] = _trace_rate(ld.trace.source, [s for _, s in seen.values()])
    return out


def _trace_rate(source: str, summaries: list[dict | None]) -> dict:
    """The replayed trace's mean request rate at speed 1, from any level that measured it."""
    for s in summaries:
        t = ((s or {}).get("workload") or {}).get("trace") or {}
        if t.get("mean_rate_per_s") and t.get("speed"):
            return {"name": source, "requests": t.get("requests"), "span_s": t.get("span_s"),
                    "rate_per_s": t["mean_rate_per_s"] / t["speed"]}
    return {"name": source, "requests": None, "span_s": None, "rate_per_s": None}


def _summary(run_dir: Path) -> dict | None:
    try:
        return load_summary(run_dir)
    except Exception:  # noqa: BLE001 - a cell with no summary is reported by its status
        return None


def _fail_all(group: Group, host: GroupHost, error: str, row: dict | None = None) -> dict:
    for cell in group.cells:
        host.finished(cell, "failed", error, None, None)
    # in place: run_group's teardown writes `row` again after this, and must not undo it
    out = row if row is not None else {}
    out.update(status="failed", error=error)
    host.group_update(group, **out)
    return out


def _fail_from(group: Group, cell: Cell, host: GroupHost, error: str) -> None:
    cells = group.cells
    for c in cells[cells.index(cell):]:
        host.finished(c, "failed", error, None, None)

