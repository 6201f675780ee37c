"""Derived files of a run dir made again from its raw records, and the checks `report` makes
before it trusts a run dir.

requests.parquet holds every timestamp a metric is computed from, so summary.json and the
timeline plots are functions of it (plus the targets in run.json). A run whose disk filled up,
or whose summary.json was lost or damaged, gets them back with `servebench report --rebuild`.
What the records cannot hold (the client's event-loop lag probes, connection set-up times,
telemetry summaries, warnings) is carried over from the old summary.json when it still reads.
"""

from __future__ import annotations

from pathlib import Path

from servebench.store import runfiles
from servebench.analysis import turns
from servebench.analysis.metrics import summarize

# "sessions" too: the old one also counted the turns never sent, which requests.parquet lacks;
# "read_lag_ms" came from the load's spool files, removed once the records were written
_CARRIED = ("warnings", "not_released", "loop_lag_ms", "read_lag_ms", "connections", "client", "telemetry",
            "workload", "schedule", "sessions", "efficiency")


def rebuild(run_dir: Path, plots: bool = True) -> list[str]:
    """Write summary.json (and the plots) from requests.parquet; returns the files written.
    Raises FileNotFoundError / runfiles.DamagedFile (one line, naming the file)."""
    run_dir = Path(run_dir)
    records = runfiles.load_records(run_dir / "requests.parquet")
    run, old = _readable(run_dir / "run.json"), _readable(run_dir / "summary.json")
    load = (run.get("config") or {}).get("load") or {}
    steady = bool((run.get("config") or {}).get("steady_state"))  # the window the run was measured over
    summary = summarize(records, target_concurrency=load.get("concurrency"), target_rate=load.get("rate"),
                        steady_state=steady)
    if (sessions := turns.per_turn(records)) is not None:  # a multi-turn run salvaged from its spool has no old one
        summary["sessions"] = sessions
    summary.update({k: old[k] for k in _CARRIED if k in old})
    summary["status"] = run.get("status") or old.get("status") or "unknown"
    summary["error"] = run.get("error", old.get("error"))
    summary["rebuilt_from"] = "requests.parquet"
    runfiles.write_summary(run_dir, summary)
    written = ["summary.json"]
    if plots and any(r.sent_ns and not r.warmup for r in records):
        from servebench.outputs.plots import plot_run

        written += [Path(p).name for p in plot_run(run_dir)]
    return written


def _readable(path: Path) -> dict:
    try:
        return runfiles.read_json(path)
    except (OSError, ValueError):
        return {}


def prepare(run_dir: Path, force: bool = False) -> tuple[list[str], list[str]]:
    """Before a report: rebuild when asked, or when summary.json is missing but the records
    are there; check that requests.parquet still reads. Returns (notes, problems): problems
    make `report` exit non-zero after printing what it can. Raises (one line) when there is
    nothing to report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    parquet, summary = run_dir / "requests.parquet", run_dir / "summary.json"
    from servebench.load.spooled import salvage

    if salvage(run_dir) is not None:  # killed mid-run: the records spooled before the kill
        return [f"requests.parquet made from the records spooled before the run ended; rebuilt "
                f"{', '.join(rebuild(run_dir))} from {parquet}"], []
    if force or (not summary.exists() and parquet.exists()):
        why = "rebuilt" if force else "summary.json was missing: rebuilt"
        return [f"{why} {', '.join(rebuild(run_dir))} from {parquet}"], []
    problems: list[str] = []
    try:
        runfiles.check_records(parquet)
    except FileNotFoundError:
        problems.append(f"{parquet} is missing: the raw records are gone, only summary.json is left")
    except runfiles.DamagedFile as e:
        problems.append(f"{e}: the raw records are lost; the report comes from summary.json alone")
    try:
        runfiles.load_summary(run_dir)
    except runfiles.DamagedFile as e:
        if problems:
            raise
        raise runfiles.DamagedFile(f"{e}; `servebench report --rebuild {run_dir}` makes it again from requests.parquet") from None
    return [], problems
