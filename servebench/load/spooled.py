"""Records spooled to disk during a load (store/spool.py), decoded back after it one batch at
a time, so the raw bytes are never all in memory at once; and a killed run's spools made into
the requests.parquet every reader knows (salvage)."""

from __future__ import annotations

import os
from pathlib import Path

from servebench.adapters import ADAPTERS
from servebench.adapters.base import Adapter
from servebench.analysis.decode import decode_record, decode_records
from servebench.load.loop import LoadStats
from servebench.records import RequestRecord
from servebench.signals import shielded
from servebench.store import runfiles, spool

# A run spools from this many expected streamed tokens (SERVEBENCH_SPOOL_MIN_TOKENS overrides):
# below it the records stay in memory (at ~0.5 KB a token, under ~0.5 GB), where nothing runs
# beside the load loop. The spool thread's batches still hold the GIL now and then (a read
# waited 3 ms in a 1,000-request run whose token gap was 2 ms), a cost worth paying only where
# memory would otherwise grow without bound.
MIN_TOKENS = 1_000_000


def wanted(expected_tokens: int) -> bool:
    limit = os.environ.get("SERVEBENCH_SPOOL_MIN_TOKENS", "").strip()
    return expected_tokens >= (int(limit) if limit.isdigit() else MIN_TOKENS)


INTERVAL_S = 0.1  # a kill loses at most about this much of the finished records
PATTERN = "requests.spool*.arrow"  # one per load process: requests.spool.arrow, requests.spool.w1.arrow, ...


def start(path: Path, adapter: str, interval_s: float = INTERVAL_S) -> spool.Spool | None:
    """A spool for one load process; None where the run dir refuses the file (the records
    then stay in memory as before, and the writer reports the unwritable dir)."""
    try:
        return spool.Spool(path, adapter, interval_s)
    except Exception:  # noqa: BLE001 - never stops a load
        remove([path, spool.lags_path(path)])  # no empty spool left to puzzle a reader
        return None


def stop(sp: spool.Spool | None, stats: LoadStats, warnings: list[str] | None = None) -> None:
    """The rest written out, and the read-lag stamps spilled during the load back in `stats`
    (8 bytes a read, for the summary's read_lag_ms); shielded, as a Ctrl-C halfway would leave
    records neither on disk nor in memory."""
    if sp is None:
        return
    with shielded():
        sp.close()
        stats.read_lag_ns.extend(sp.read_lags())
        remove([sp.lag_path])
    if sp.error and warnings is not None:
        warnings.append(f"records kept in memory after the spool to disk failed: {sp.error}")


def decode_all(adapter: Adapter, records: list[RequestRecord], paths: list[Path]) -> None:
    """Decode every record: spooled ones from their bytes on disk (dropped again after), the
    rest (warm-up, in flight at a Ctrl-C, or all when spooling was off) from memory."""
    for p in paths:
        if p.exists():
            spool.restore(p, records, lambda r: decode_record(adapter, r))
    decode_records(adapter, records)


def remove(paths: list[Path]) -> None:
    """Once requests.parquet holds the rows: the spools are a crash copy, no longer needed."""
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def found(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob(PATTERN))


def salvage(run_dir: Path) -> Path | None:
    """A run dir without requests.parquet but with spools (the run was killed): decode what
    they hold into requests.parquet. None when there is nothing to salvage."""
    run_dir = Path(run_dir)
    target, paths = run_dir / "requests.parquet", found(run_dir)
    if target.exists() or not paths:
        return None
    out: list[RequestRecord] = []
    for p in paths:
        key, rows = spool.records(p)
        adapter = ADAPTERS.get(key or "")
        if adapter is None:
            raise runfiles.DamagedFile(f"{p}: unknown adapter {key!r} in the spool")
        for rec in rows:
            decode_record(adapter, rec)
            rec.chunks = []
            out.append(rec)
    out.sort(key=lambda r: r.index)
    runfiles.write_records(target, out)
    return target
