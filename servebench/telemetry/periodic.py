"""A sampler that reads something on a fixed period in a background thread.

Subclasses implement `_open` (raise `Unavailable` to say why nothing can be sampled),
`_sample(now_ns)` and optionally `_close`. This class owns the thread, the lock that lets
`sample_now()` interleave safely with the thread, and the rule that telemetry never takes
the run down: any exception ends sampling with a reason, and the data so far is kept.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from servebench.errors import described


def write_rows(rows: list, columns, path: Path) -> None:
    """Rows as a parquet file, whole or not at all: written beside it and renamed, the partial
    file removed when the disk refuses it (a full disk used to leave a 0-byte file that read as
    samples)."""
    import pandas as pd

    tmp = path.with_name(path.name + ".tmp")
    try:
        pd.DataFrame(rows, columns=list(columns)).to_parquet(tmp, index=False)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Unavailable(Exception):
    """Nothing can be sampled; the message (one line) goes into the summary."""


class PeriodicSampler:
    name = "periodic"

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"{self.name}: interval must be > 0 s, got {interval_s}")
        self.interval_s = float(interval_s)
        self.window: tuple[int, int] | None = None
        self.reason: str | None = None  # set: unavailable (before any data) or stopped early
        self._opened = False
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- subclass hooks
    def _open(self) -> None:  # raise Unavailable
        pass

    def _sample(self, now_ns: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _has_data(self) -> bool:
        raise NotImplementedError

    # -- Sampler interface
    def ensure_open(self) -> bool:
        """Open once; False (with self.reason set) when there is nothing to sample."""
        if self._opened or self.reason is not None:
            return self._opened
        try:
            self._open()
            self._opened = True
        except Unavailable as e:
            self.reason = str(e)
        except Exception as e:  # a broken library must not break the run
            self.reason = f"could not start: {described(e)}"
        return self._opened

    def start(self) -> None:
        if self._thread is not None or not self.ensure_open():
            return
        self._thread = threading.Thread(target=self._loop, name=f"servebench-{self.name}", daemon=True)
        self._thread.start()

    def sample_now(self) -> None:
        """Take one sample right now, in the caller's thread (e.g. at the window marks, so
        counters are read at the boundary instead of up to one interval away)."""
        if self._opened and not self._closed and self.reason is None:
            self._guarded_sample()

    def mark_window(self, start_ns: int, end_ns: int) -> None:
        self.window = (int(start_ns), int(end_ns))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A sample is bounded by its own timeouts; don't hang teardown on a stuck driver.
            self._thread.join(timeout=max(5.0, 3 * self.interval_s))
        if self._opened and not self._closed:
            self._closed = True  # close once: NVML counts inits and shutdowns
            try:
                self._close()
            except Exception:
                pass

    def write(self, run_dir: Path) -> list[str]:
        raise NotImplementedError

    def _write_rows(self, run_dir: Path, name: str, columns) -> list[str]:
        """`self.rows` as run_dir/name (a parquet file); nothing when no sample was taken."""
        if not self.rows:
            return []
        write_rows(self.rows, columns, Path(run_dir) / name)
        return [name]

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- internals
    def _guarded_sample(self) -> None:
        with self._lock:
            if self.reason is not None:
                return
            try:
                self._sample(time.perf_counter_ns())
            except Exception as e:
                self.reason = f"sampling stopped: {described(e)}"

    def _loop(self) -> None:
        # Deadlines on a fixed grid so the period doesn't drift by the sampling cost; if a
        # sample overran (a slow scrape), skip ahead instead of firing a burst to catch up.
        period_ns = int(self.interval_s * 1e9)
        deadline = time.perf_counter_ns()
        while not self._stop.is_set() and self.reason is None:
            self._guarded_sample()
            deadline += period_ns
            now = time.perf_counter_ns()
            if deadline <= now:
                deadline = now + period_ns - (now - deadline) % period_ns
            self._stop.wait((deadline - now) / 1e9)

    def _unavailable_summary(self) -> dict[str, Any] | None:
        if not self._opened or not self._has_data():
            return {"available": False, "reason": self.reason or "no samples were taken"}
        return None
