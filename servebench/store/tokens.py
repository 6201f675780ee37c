"""Decoded per-token arrays on disk after the load, read back one record (or one span) at a time.

A long spooled run decoded every record back into memory: its token stamps and counts (~16 B a
token) stayed there from decoding to the end of the summary, so the post-load peak grew with the
run (issue 20: 832 MB after an hour). Here each decoded record's arrays are appended to two
anonymous files in the run dir (stamps, counts) and dropped; the record keeps only its
TokenStats, whose `at` says where they are. requests.parquet and the ITL passes read them back.
The files have no name (O_TMPFILE, or unlinked at once): a crash leaves nothing behind, and they
go when the last record pointing at them does.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from pathlib import Path

import numpy as np

from servebench.records import COUNTS, NS, TokenStats


class TokenFile:
    def __init__(self, where: Path) -> None:
        # unbuffered: a full disk fails the put() of the record it hits, not a later read
        self._ns = tempfile.TemporaryFile(dir=where, buffering=0)
        self._counts = tempfile.TemporaryFile(dir=where, buffering=0)
        self.events = 0  # written so far
        self.failed = False  # a put() failed: the caller spills no more

    def put(self, ns: array, counts: array) -> int:
        """Append one record's arrays; returns where its first event is. An OSError (disk
        full) leaves the file as it was: the caller keeps that record's arrays in memory."""
        at = self.events
        try:
            for f, data in ((self._ns, memoryview(ns).cast("B")), (self._counts, memoryview(counts).cast("B"))):
                if f.write(data) != len(data):
                    raise OSError("token file: short write (disk full)")
        except OSError:
            for f, size in ((self._ns, at * 8), (self._counts, at * 4)):  # the part written is dropped
                f.truncate(size)
                f.seek(size)
            raise
        self.events += len(ns)
        return at

    def read(self, t: TokenStats) -> tuple[array, array]:
        ns, counts = self.span(t.at, t.at + t.events)
        return array(NS, ns.tobytes()), array(COUNTS, counts.tobytes())

    def span(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Events [start, end) of every record written, as numpy arrays."""
        n = end - start
        ns = os.pread(self._ns.fileno(), n * 8, start * 8)
        counts = os.pread(self._counts.fileno(), n * 4, start * 4)
        if len(ns) != n * 8 or len(counts) != n * 4:
            raise OSError(f"token file: {len(ns) // 8} of {n} events read back")
        return np.frombuffer(ns, dtype=np.int64), np.frombuffer(counts, dtype=np.intc)
