"""CPU and memory of the server's process tree (psutil), re-discovered every sample.

vLLM, SGLang and TGI spawn workers after start-up (and may respawn them), so the tree is
walked from the launcher's process-group leader each time. CPU is computed from CPU-time
differences between samples, in cores (1.0 = one core busy for the whole interval).

CPU time is read from each process's CPU-time clock (clock_gettime on the pid's
CLOCK_PROCESS_CPUTIME: the scheduler's nanosecond runtime of all its threads), not from
/proc/<pid>/stat, whose user and system times are each truncated to 10 ms ticks. Over the
0.1 s interval that truncation was worth up to 2 ticks per process: with vLLM's processes
on 2 busy cores one interval read 3.00 cores. A rate's interval runs from the start of the
previous pass over the tree to the end of this one, so it contains every process's own
interval between its two readings: the rate can undercount by the pass's duration, never
exceed what the cores could do. Where the clock is missing (not Linux) the ticks are used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from servebench.errors import described
from servebench.telemetry.periodic import PeriodicSampler, Unavailable
from servebench.telemetry.summary import finite, headline, mean_in, peak_in, unavailable

COLUMNS = ("t_ns", "cpu_cores", "rss_bytes", "num_procs")
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


MIN_RATE_INTERVAL_NS = 50_000_000  # shortest interval a CPU rate is computed over


def cpu_clock_s(pid: int) -> float | None:
    """CPU seconds of process `pid` (all threads, live and exited), nanosecond resolution;
    None where the OS has no per-process CPU clock for other processes."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9  # make_process_cpuclock(pid, CPUCLOCK_SCHED)
    except (AttributeError, OSError, OverflowError, ValueError):
        return None


class ProcessSampler(PeriodicSampler):
    name = "process"

    def __init__(self, pid: int | None, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self.pid = pid
        self.rows: list[tuple] = []
        # (pid, create_time) -> cumulative CPU seconds at the previous sample; create_time
        # keeps a recycled pid from inheriting a dead process's CPU time.
        self._cpu: dict[tuple[int, float], float] = {}
        self._procs: dict[tuple[int, float], Any] = {}
        self._prev_ns: int | None = None  # start of the pass that set the baseline
        self._prev_wall: float = 0.0
        self.cpu_source = "process CPU clock (ns)"

    def _open(self) -> None:
        if self.pid is None:
            raise Unavailable("no local server process to sample (external, container or remote server)")
        import psutil

        try:
            self._root = psutil.Process(self.pid)
            self._root.cpu_times()
        except psutil.NoSuchProcess as e:
            raise Unavailable(f"server process {self.pid} does not exist") from e
        except psutil.AccessDenied as e:
            raise Unavailable(f"no permission to read server process {self.pid}") from e
        self._psutil = psutil

    def _tree_pids(self) -> list[int]:
        """The root and all its descendants. Linux: walk /proc/<pid>/task/<tid>/children,
        which costs per process in the tree; psutil's children() reads every process on the
        host, several times slower, and this runs in the load generator's process."""
        if not _PROC_CHILDREN:
            return [self.pid, *(c.pid for c in self._root.children(recursive=True))]
        out, stack = [], [self.pid]
        while stack:
            pid = stack.pop()
            out.append(pid)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue  # exited meanwhile
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        stack.extend(int(x) for x in f.read().split())
                except OSError:
                    pass
        return out

    def _tree(self) -> list[Any]:
        ps = self._psutil
        if not self._root.is_running():
            raise RuntimeError(f"server process {self.pid} exited")
        out = []
        for pid in self._tree_pids():
            try:
                p = ps.Process(pid) if pid != self.pid else self._root
                key = (pid, p.create_time())
            except (ps.NoSuchProcess, ps.AccessDenied):
                continue
            # Keep one Process per (pid, create_time): psutil caches per-object facts.
            out.append(self._procs.setdefault(key, p))
        return out

    def _sample(self, now_ns: int) -> None:
        ps = self._psutil
        wall = time.time()
        t_start = time.perf_counter_ns()
        cpu_now: dict[tuple[int, float], float] = {}
        busy = 0.0
        rss = 0
        for p in self._tree():
            try:
                total = cpu_clock_s(p.pid)
                with p.oneshot():
                    if total is None:
                        ct = p.cpu_times()
                        total = ct.user + ct.system
                        self.cpu_source = "/proc/<pid>/stat (10 ms ticks)"
                    mem = p.memory_info().rss
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
            key = (p.pid, p.create_time())
            cpu_now[key] = total
            prev = self._cpu.get(key)
            if prev is not None:
                busy += max(0.0, total - prev)
            elif self._prev_ns is not None and key[1] >= self._prev_wall:
                busy += total  # born since the last sample: all its CPU time is in this interval
            rss += mem
        if not cpu_now:
            raise RuntimeError(f"server process {self.pid} exited")
        t_ns = time.perf_counter_ns()
        self._procs = {k: v for k, v in self._procs.items() if k in cpu_now}
        if self._prev_ns is not None and t_ns - self._prev_ns < MIN_RATE_INTERVAL_NS:
            # CPU times tick in 10 ms; over a few ms (a sample_now at a window mark right after
            # a periodic one) one tick reads as many cores. Keep the baseline; no rate here.
            self.rows.append((t_ns, None, rss, len(cpu_now)))
            return
        # from the previous pass's start: every process's two readings lie inside this interval
        cores = None if self._prev_ns is None else busy / ((t_ns - self._prev_ns) / 1e9)
        self._cpu, self._prev_ns, self._prev_wall = cpu_now, t_start, wall
        self.rows.append((t_ns, cores, rss, len(cpu_now)))

    def _has_data(self) -> bool:
        return len(self.rows) > 1

    def write(self, run_dir: Path) -> list[str]:
        return self._write_rows(run_dir, "process.parquet", COLUMNS)

    def summary(self) -> dict[str, Any]:
        try:
            out = self._unavailable_summary()
            if out is not None:
                return out
            t = [r[0] for r in self.rows]
            cpu, rss, n = ([r[i] for r in self.rows] for i in (1, 2, 3))
            w = self.window
            peak_rss = peak_in(t, rss, w)
            out = {
                "available": True,
                "pid": self.pid,
                "interval_s": self.interval_s,
                "host_cpus": os.cpu_count(),
                "cpu_source": self.cpu_source,
                "mean_cpu_cores": finite(mean_in(t, cpu, w), 3),
                "peak_cpu_cores": finite(peak_in(t, cpu, w), 3),
                "peak_rss_bytes": None if peak_rss is None else int(peak_rss),
                "peak_num_procs": None if not n else int(peak_in(t, n, w) or 0),
            }
            out["headline"] = headline([
                ("CPU cores mean", out["mean_cpu_cores"], ".2f"), ("peak", out["peak_cpu_cores"], ".2f"),
                ("RSS peak GiB", None if peak_rss is None else peak_rss / 2**30, ".2f"),
                ("processes", out["peak_num_procs"], "d"),
            ])  # fmt: skip
            if self.reason:
                out["stopped_early"] = self.reason
            return out
        except Exception as e:
            return unavailable(f"summary failed: {described(e)}")
