"""Completed requests on disk while the run goes on, raw bytes and stamps as received.

Holding every token's bytes until the run ends made RSS grow ~0.5 KB per token (issue 20: 1.5
GB after 1.9 M tokens; tens of GB for an hour at GPU rates). Here the load loop only appends a
finished record to a deque; a thread takes what gathered every `interval_s`, appends it to the
spool as one Arrow IPC stream batch and then drops the record's chunks, so memory holds what
is in flight plus one interval. The IPC *stream* format has no footer: a run killed with
SIGKILL leaves every batch written before it readable (a parquet file without its footer
reads as nothing). Decoding still happens after the run, from these bytes (raw-first).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from servebench.records import RequestRecord

SWITCH_S = 0.00025  # the GIL switch interval while a spool thread runs (see Spool.__init__)
# streamed events per written batch: each pa.array call holds the GIL for its whole list, and
# a closed loop's streams end together (50 records, 3,200 events in one flush): converted in one
# piece a read waited up to 7 ms behind it (issue 20; docs/performance.md, "Memory over long runs")
SLICE_EVENTS = 256
# and the load loop gets the GIL back between slices: a flush of 3,200 events takes ~13 ms of
# wall time (well inside the 0.1 s interval) but never holds the loop for more than one slice
SLICE_PAUSE_S = 0.001
NAME = "requests.spool.arrow"  # in the run dir; removed once requests.parquet holds its rows
_SCALARS: list[tuple[str, pa.DataType]] = [
    ("index", pa.int64()), ("warmup", pa.bool_()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("scheduled_ns", pa.int64()), ("slot_ns", pa.int64()), ("connect_ns", pa.int64()), ("sent_ns", pa.int64()),
    ("first_byte_ns", pa.int64()), ("end_ns", pa.int64()), ("status", pa.int32()), ("error", pa.string()),
]
# multi-turn sessions only: which conversation a turn is, and its texts (the history a turn
# sends grows with every turn: held until the run ends it grew like the raw bytes)
_SESSION: list[tuple[str, pa.DataType]] = [
    ("session", pa.int64()), ("turn", pa.int64()), ("prompt_text", pa.string()), ("reply_text", pa.string()),
]
_TEXTS = ("prompt_text", "reply_text")
_RAW = [("chunk_ns", pa.list_(pa.int64())), ("chunk_data", pa.list_(pa.binary()))]
_STAMPS = ("scheduled_ns", "slot_ns", "sent_ns", "first_byte_ns", "end_ns")


def schema(adapter: str, sessions: bool = False, shift_ns: int = 0) -> pa.Schema:
    """The adapter key rides in the metadata: a salvaged spool is decoded without run.json.
    shift_ns: what moves this process's stamps onto the run's clock (a Ray actor on another
    host reads its own monotonic clock; salvage applies it)."""
    cols = _SCALARS + (_SESSION if sessions else []) + _RAW
    meta = {"adapter": adapter, **({"shift_ns": str(shift_ns)} if shift_ns else {})}
    return pa.schema([pa.field(n, t) for n, t in cols], metadata=meta)


def batch(records: list[RequestRecord], sch: pa.Schema) -> pa.RecordBatch:
    # malloc's pool, not pyarrow's default (jemalloc): with jemalloc a conversion now and then ran
    # long with the GIL held (its page purges, we think: not traced), and reads waited 5-7 ms
    # behind it where with malloc's they waited 3-5 ms (issue 20; docs/performance.md)
    pool = pa.system_memory_pool()
    cols = [pa.array([getattr(r, f.name) for r in records], type=f.type, memory_pool=pool)
            for f in sch if not f.name.startswith("chunk_")]
    cols.append(pa.array([[c[0] for c in r.chunks] for r in records], type=pa.list_(pa.int64()), memory_pool=pool))
    cols.append(pa.array([[c[1] for c in r.chunks] for r in records], type=pa.list_(pa.binary()), memory_pool=pool))
    return pa.RecordBatch.from_arrays(cols, schema=sch)


def slices(records: list[RequestRecord], events: int = SLICE_EVENTS) -> Iterator[list[RequestRecord]]:
    """Consecutive runs of records holding about `events` streamed chunks each (at least one record)."""
    part: list[RequestRecord] = []
    n = 0
    for r in records:
        part.append(r)
        n += len(r.chunks) + 1
        if n >= events:
            yield part
            part, n = [], 0
    if part:
        yield part


def warm(sch: pa.Schema | None = None) -> None:
    """pyarrow's first conversion of Python lists costs ~200 ms (lazy set-up; 650 ms on a busy
    host), all of it with the GIL held: made before the load, not in the first flush, where it
    stalled the load loop (a read waited 15 ms; a run judged "did not keep up" on an idle host),
    and by a load worker before it reports ready, not after t0, where it delayed its start."""
    batch([RequestRecord(index=0, chunks=[(0, b"")])], sch or schema(""))


def lags_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name.replace(".arrow", ".lags"))


class Spool:
    """add() from the load loop (a deque append); a thread writes a batch every interval_s.
    A write that fails stops spooling and keeps every record in memory as before (the run
    is never failed for it); `error` says why."""

    def __init__(self, path: Path, adapter: str, interval_s: float = 1.0, *, sessions: bool = False,
                 shift_ns: int = 0, on_start: Callable[[], object] | None = None) -> None:
        self.path, self.interval_s, self.sessions = Path(path), interval_s, sessions
        self.error: str | None = None
        self.written = 0  # records on disk
        self._q: deque[RequestRecord] = deque()
        self._lags: deque[array] = deque()  # read-lag stamps (8 bytes a read): appended raw to a file
        self.lag_path = lags_path(self.path)
        self._lag_file = open(self.lag_path, "wb", buffering=0)
        self._lag_bytes = 0  # written whole: a torn write's part is not read back
        self._schema = schema(adapter, sessions, shift_ns)
        self._sink = pa.OSFile(str(self.path), "wb")  # unbuffered: each batch reaches the OS whole
        self._writer = pa.ipc.new_stream(self._sink, self._schema)
        warm(self._schema)
        self._stop = threading.Event()
        self._on_start = on_start
        # while this thread builds a batch it holds the GIL, and the load loop waiting to send
        # gets it back only after the switch interval (5 ms by default): send error p99 went
        # from 0.12-0.15 to 0.3-1.1 ms at 200 requests/s, max 2 -> 13 ms. Handing over within
        # 0.25 ms keeps the sends on time (docs/performance.md, "Memory over long runs")
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_S))
        self._thread = threading.Thread(target=self._run, name="servebench-spool", daemon=True)
        self._thread.start()

    def add(self, rec: RequestRecord) -> None:
        self._q.append(rec)

    def add_lags(self, lags: array) -> None:
        """A run's per-read lag stamps, a slice at a time (load/loop.py _spill_lags)."""
        self._lags.append(lags)

    def read_lags(self) -> array:
        """Every stamp handed in: those on disk, then those a failed write left in memory."""
        out = array("q")
        try:
            with open(self.lag_path, "rb") as f:
                out.frombytes(f.read(self._lag_bytes))
        except OSError:
            pass
        for a in self._lags:
            out.extend(a)
        return out

    def lags_left_on_disk(self) -> array:
        """After close(): the lag file cut to the stamps written whole, left for a reader that
        takes it a block at a time (load/spooled.lag_blocks); returns those a failed write
        left in memory. OSError when the file cannot be cut (read_lags() then)."""
        os.truncate(self.lag_path, self._lag_bytes)
        out = array("q")
        for a in self._lags:
            out.extend(a)
        return out

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        if self.error is not None:
            return
        try:
            while self._lags:
                data = self._lags[0].tobytes()
                self._lag_file.write(data)
                self._lag_bytes += len(data)
                self._lags.popleft()
        except Exception as e:  # noqa: BLE001 - what is left stays in memory (read_lags)
            self.error = f"{type(e).__name__}: {e}"
            return
        q, taken = self._q, []
        while q:
            taken.append(q.popleft())
        if not taken:
            return
        try:
            for k, part in enumerate(slices(taken)):
                if k:  # the GIL to the load loop for a while: a flush is spread over ~1 ms per slice
                    time.sleep(SLICE_PAUSE_S)
                self._writer.write_batch(batch(part, self._schema))
        except Exception as e:  # noqa: BLE001 - the records stay in memory and are written at the end
            self.error = f"{type(e).__name__}: {e}"
            return
        for r in taken:  # on disk: the bytes are read back after the run
            r.chunks = []
        if self.sessions:  # decoded as each turn ended; the texts come back for requests.parquet
            for r in taken:
                r.prompt_text = r.reply_text = None
        self.written += len(taken)

    def close(self) -> None:
        """Stop the thread and write what is left; safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)
        self.flush()
        try:
            self._writer.close()
            self._sink.close()
            self._lag_file.close()
        except Exception as e:  # noqa: BLE001 - every batch already written stays readable
            self.error = self.error or f"{type(e).__name__}: {e}"


def read(path: Path) -> tuple[str | None, Iterator[pa.RecordBatch]]:
    """(adapter key, batches): every whole batch, stopping quietly at a torn last one."""
    source = pa.OSFile(str(path))  # not memory_map: every page read stayed in RSS till the end (issue 20)
    reader = pa.ipc.open_stream(source)
    meta = reader.schema.metadata or {}
    adapter = meta.get(b"adapter", b"").decode() or None

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):  # a batch cut short by a kill: the rest is gone
                return

    return adapter, batches()


def restore(path: Path, records: list[RequestRecord], each: Callable[[RequestRecord], None]) -> int:
    """Put each spooled row's bytes back on its record (matched by index), call each(rec) on
    it (decode), then drop the bytes again: one batch in memory at a time. Records not in the
    spool are untouched, and so is one already decoded (a worker did it). Returns the rows
    restored."""
    by_index = {r.index: r for r in records if not r.decoded}
    n = 0
    if not by_index:
        return n
    for b in read(path)[1]:
        if not any(i in by_index for i in b.column("index").to_pylist()):
            continue  # none of its rows is wanted: its bytes are never made Python objects
        cols = b.to_pydict()
        for i, idx in enumerate(cols["index"]):
            rec = by_index.get(idx)
            if rec is None:
                continue
            rec.chunks = list(zip(cols["chunk_ns"][i], cols["chunk_data"][i]))
            each(rec)
            rec.chunks = []
            n += 1
    return n


def restore_texts(path: Path, records: list[RequestRecord]) -> int:
    """A session spool's conversation texts back on their records (matched by index), for the
    client's token counts and requests.parquet; only those two columns are read. Returns the
    rows restored."""
    by_index = {r.index: r for r in records}
    n = 0
    for b in read(path)[1]:
        if "prompt_text" not in b.schema.names:
            return n
        cols = [b.column(c).to_pylist() for c in ("index", *_TEXTS)]
        for idx, prompt, reply in zip(*cols):
            if (rec := by_index.get(idx)) is not None:
                rec.prompt_text, rec.reply_text = prompt, reply
                n += 1
    return n


def records(path: Path) -> tuple[str | None, Iterator[RequestRecord]]:
    """A spool left by a killed run, as records with their bytes (salvage), their stamps on
    the run's clock."""
    shift = int((pa.ipc.open_stream(pa.memory_map(str(path))).schema.metadata or {}).get(b"shift_ns", b"0"))
    adapter, batches = read(path)

    def rows() -> Iterator[RequestRecord]:
        for b in batches:
            cols = b.to_pydict()
            names = [n for n in cols if not n.startswith("chunk_")]
            for i in range(b.num_rows):
                kw = {n: cols[n][i] for n in names}
                for n in _STAMPS if shift else ():
                    kw[n] = kw[n] + shift if kw[n] else 0
                chunks = [(t + shift, d) for t, d in zip(cols["chunk_ns"][i], cols["chunk_data"][i])]
                yield RequestRecord(**kw, chunks=chunks)

    return adapter, rows()
