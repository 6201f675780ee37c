"""Records spooled to disk during a load (store/spool.py), decoded back after it one batch at
a time, so the raw bytes are never all in memory at once; and a killed run's spools made into
the requests.parquet every reader knows (salvage)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from servebench.adapters import ADAPTERS
from servebench.adapters.base import Adapter
from servebench.analysis.decode import decode_record, decode_records
from servebench.analysis.per_request import token_stats
from servebench.load.loop import LoadStats, realtime_on
from servebench.records import SPILLED, RequestRecord, counts_array, ns_array
from servebench.signals import shielded
from servebench.store import runfiles, spool
from servebench.store.tokens import TokenFile

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
MARK = "requests.spool.id"  # --workers ray:N: a token that tells an actor it sees the run dir


def start(path: Path, adapter: str, interval_s: float = INTERVAL_S, *, sessions: bool = False,
          shift_ns: int = 0, realtime: bool = True) -> spool.Spool | None:
    """A spool for one load process; None where the run dir refuses the file (the records
    then stay in memory as before, and the writer reports the unwritable dir).

    realtime: the spool thread runs under the load loop's policy (SCHED_RR when the loop does).
    At normal priority a busy host took the CPU from it while it held the GIL, and the
    real-time loop waited for it: writes that take 0.1 ms lasted up to 375 ms, and reads
    waited up to 37 ms behind them (issue 20; docs/performance.md)."""
    try:
        return spool.Spool(path, adapter, interval_s, sessions=sessions, shift_ns=shift_ns,
                           on_start=realtime_on if realtime else None)
    except Exception:  # noqa: BLE001 - never stops a load
        remove([path, spool.lags_path(path)])  # no empty spool left to puzzle a reader
        return None


def stop(sp: spool.Spool | None, stats: LoadStats, warnings: list[str] | None = None, *,
         keep_lags: bool = False) -> None:
    """The rest written out, and the read-lag stamps spilled during the load back in `stats`
    (8 bytes a read, for the summary's read_lag_ms); shielded, as a Ctrl-C halfway would leave
    records neither on disk nor in memory. keep_lags: the stamps on disk stay there (the
    writer reads them a block at a time, lag_blocks(): read back whole they were ~8 B a token
    at the post-load peak, issue 20); only those a failed write left in memory join `stats`."""
    if sp is None:
        return
    with shielded():
        sp.close()
        if keep_lags and (left := _lags_left(sp)) is not None:
            stats.read_lag_ns.extend(left)
        else:
            stats.read_lag_ns.extend(sp.read_lags())
            remove([sp.lag_path])
    if sp.error and warnings is not None:
        warnings.append(f"records kept in memory after the spool to disk failed: {sp.error}")


def _lags_left(sp: spool.Spool) -> array | None:
    try:
        return sp.lags_left_on_disk()
    except OSError:
        return None


LAG_BLOCK = 1 << 18  # stamps read back at once (2 MB; a pass holds a few copies of a block)


def lag_blocks(spools: list[Path], tail: array) -> tuple[int, Callable[[], Iterator[np.ndarray]]]:
    """(how many, the batches) of a run's read lags in ms: those stop(keep_lags=True) left in
    the spools' lag files, a block at a time, then `tail` (the stamps held in memory)."""
    files = [f for f in (spool.lags_path(p) for p in spools) if f.exists()]
    n = len(tail) + sum(f.stat().st_size // 8 for f in files)

    def batches() -> Iterator[np.ndarray]:
        for f in files:
            with open(f, "rb") as src:
                while block := src.read(LAG_BLOCK * 8):
                    yield np.frombuffer(block[: len(block) // 8 * 8], dtype=np.int64) / 1e6
        if len(tail):
            yield np.asarray(tail, dtype=np.int64) / 1e6

    return n, batches


def warm() -> None:
    spool.warm()


def for_sessions(path: Path, adapter: str, records: list[RequestRecord],
                 realtime: bool = True) -> spool.Spool | None:
    """A multi-turn run's spool (its turns' texts too), when its turns ask for enough tokens."""
    if not wanted(sum(r.output_tokens for r in records if not r.warmup)):
        return None
    return start(path, adapter, sessions=True, realtime=realtime)


def finish_sessions(sp: spool.Spool | None, records: list[RequestRecord], stats: LoadStats,
                    warnings: list[str] | None = None) -> None:
    """stop() (the read lags left on disk for the writer), and the conversation texts the spool
    took off the records put back (the client's token counts and requests.parquet need them);
    shielded as stop() is."""
    with shielded():
        stop(sp, stats, warnings, keep_lags=True)
        if sp is not None and sp.written:
            spool.restore_texts(sp.path, records)


def mark(run_dir: Path) -> str | None:
    """--workers ray:N: a token in the run dir. An actor that reads it back sees this run dir
    (the driver's host, or a shared file system) and spools into it, where a killed run's
    records are found; None where the dir refuses the file (actors then spool on their node)."""
    token = secrets.token_hex(16)
    try:
        (Path(run_dir) / MARK).write_text(token)
    except OSError:
        return None
    return token


def place(job: dict) -> tuple[dict, Path | None]:
    """Where a Ray actor spools: job["spool"] in the run dir when the actor sees the driver's
    token there; else a scratch dir on its own node (memory stays flat; a crash loses that
    copy), returned so the actor removes it. Jobs without a token (local workers) as given."""
    spool_at, token = job.get("spool"), job.get("spool_token")
    if not spool_at or not token:
        return job, None
    try:
        if (Path(spool_at).parent / MARK).read_text() == token:
            return job, None
    except OSError:
        pass
    try:
        scratch = Path(tempfile.mkdtemp(prefix="servebench-spool-"))
    except OSError:
        return {**job, "spool": None}, None  # no disk here either: records held, as before
    # the driver never sees this disk: the read lags go back with the records
    return {**job, "spool": str(scratch / Path(spool_at).name), "keep_lags": False}, scratch


def discard(scratch: Path | None) -> None:
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def decode_all(adapter: Adapter, records: list[RequestRecord], paths: list[Path], spill: Path | None = None) -> None:
    """Decode every record: spooled ones from their bytes on disk (dropped again after), the
    rest (warm-up, in flight at a Ctrl-C, or all when spooling was off) from memory.
    spill: a dir where each decoded record's token arrays go once decoded (store/tokens.py),
    the record keeping only its TokenStats, so the arrays of a long run are never all in
    memory; a dir that refuses the file (or a full disk on the way) keeps the rest in memory."""
    tf = _token_file(spill)
    keep = (lambda r: None) if tf is None else (lambda r: _spill(tf, r))
    for p in paths:
        if p.exists():
            spool.restore(p, records, lambda r: (decode_record(adapter, r), keep(r)))
    decode_records(adapter, records)
    if tf is not None:
        for r in records:  # decoded from memory, or by a load worker
            if r.decoded and r.tok is None:
                keep(r)


def spiller(where: Path) -> Callable[[list[RequestRecord]], None] | None:
    """--workers N: each batch a worker sends back, its decoded token arrays to disk as it
    arrives (the parent never holds every worker's arrays at once); None where the dir
    refuses the file (they stay in memory, as before)."""
    tf = _token_file(where)
    if tf is None:
        return None

    def spill(batch: list[RequestRecord]) -> None:
        for r in batch:
            if r.decoded and r.tok is None:
                _spill(tf, r)

    return spill


def _token_file(where: Path | None) -> TokenFile | None:
    if where is None:
        return None
    try:
        return TokenFile(where)
    except OSError:
        return None


def _typed(values, make):
    return values if isinstance(values, array) and values.typecode == make().typecode else make(values)


def _spill(tf: TokenFile, r: RequestRecord) -> None:
    if tf.failed:
        return
    ns, counts = _typed(r.token_ns, ns_array), _typed(r.token_counts, counts_array)
    if len(ns) != len(counts):  # not a decoded record's: its place in the file would be wrong
        return
    stats = token_stats(r)
    try:
        stats.at = tf.put(ns, counts)
    except OSError:  # a full disk: this record and the rest keep their arrays in memory
        tf.failed = True
        return
    stats.src = tf
    r.tok, r.token_ns, r.token_counts = stats, SPILLED, SPILLED


def remove(paths: list[Path]) -> None:
    """Once requests.parquet holds the rows: the spools are a crash copy, no longer needed."""
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def remove_lags(spools: list[Path]) -> None:
    remove([spool.lags_path(p) for p in spools])


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
