"""GPU sampler over NVML (nvidia-ml-py): memory, utilisation, power, SM clock, energy.

The nvml module is injected (tests pass a fake); by default `import pynvml`. Only the run's
GPUs are sampled, resolved to NVML devices through CUDA_VISIBLE_DEVICES (indices or UUIDs).
Energy is the driver's total-energy counter (mJ) read at the window edges, not integrated
power: the counter is exact, power readings are already averaged by the driver.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from servebench.telemetry.gpus import Device, is_local, parse_visible, resolve_devices, text
from servebench.errors import described
from servebench.telemetry.periodic import PeriodicSampler, Unavailable
from servebench.telemetry.summary import finalize, finite, headline, interp_delta, mean_in, peak_in, unavailable

COLUMNS = (
    "seq", "t_ns", "gpu", "nvml_index", "uuid", "mem_used_bytes", "mem_total_bytes",
    "util_gpu_pct", "util_mem_pct", "power_w", "sm_clock_mhz", "energy_mj",
)  # fmt: skip
# Metric groups in read order; energy first so its stamp is the tightest.
_GROUPS = ("energy", "memory", "utilization", "power", "sm_clock")
# Errors that mean "this metric will never work on this device": skip it from then on.
_SKIP = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound")
# Errors that mean the device is gone: stop sampling it, keep the others.
_LOST = ("NVMLError_GpuIsLost", "NVMLError_Unknown", "NVMLError_GpuNotFound")
_VALUES = COLUMNS[5:]  # the measured columns, after seq/t_ns/gpu/nvml_index/uuid


def _errors(nvml: Any, names: tuple[str, ...]) -> tuple[type, ...]:
    return tuple(c for n in names if isinstance(c := getattr(nvml, n, None), type))


class NvmlSampler(PeriodicSampler):
    name = "gpu"

    def __init__(
        self,
        gpus: list[int] | None = None,
        interval_s: float = 0.1,
        nvml: Any = None,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> None:
        super().__init__(interval_s)
        self._nvml = nvml
        self._gpus = list(gpus) if gpus is not None else None
        self._env = os.environ if env is None else env
        self._base_url = base_url
        self.devices: list[Device] = []
        self.rows: list[tuple] = []
        self._seq = 0
        self._info: dict[str, Any] = {}

    def _open(self) -> None:
        if self._base_url is not None and not is_local(self._base_url):
            raise Unavailable(f"server {self._base_url} is not on this host; its GPUs can't be sampled here")
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as e:
                raise Unavailable(f"nvidia-ml-py is not installed ({described(e)})") from e
            self._nvml = pynvml
        nv = self._nvml
        base = _errors(nv, ("NVMLError",)) or (Exception,)
        try:
            nv.nvmlInit()
        except base as e:
            raise Unavailable(f"NVML unavailable: {described(e)}") from e
        try:
            visible = parse_visible(self._env.get("CUDA_VISIBLE_DEVICES"))
            self.devices = resolve_devices(nv, self._gpus, visible)
            self._info = self._read_host_info()
        except BaseException:
            self._close()
            raise
        self._skip, self._lost = _errors(nv, _SKIP), _errors(nv, _LOST)

    def _close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def _read_host_info(self) -> dict[str, Any]:
        nv = self._nvml
        info: dict[str, Any] = {}
        try:
            info["nvidia_driver_version"] = text(nv.nvmlSystemGetDriverVersion())
        except Exception:
            info["nvidia_driver_version"] = None
        try:
            v = int(nv.nvmlSystemGetCudaDriverVersion())
            info["cuda_driver_version"] = f"{v // 1000}.{v % 1000 // 10}"  # 12040 -> "12.4"
        except Exception:
            info["cuda_driver_version"] = None
        gpus = []
        for d in self.devices:
            try:
                d.mem_total = int(nv.nvmlDeviceGetMemoryInfo(d.handle).total)
            except Exception:
                pass
            gpus.append({"gpu": d.pos, "nvml_index": d.index, "uuid": d.uuid, "name": d.name,
                         "memory_total_bytes": d.mem_total})  # fmt: skip
        info["gpus"] = gpus
        info["cuda_visible_devices"] = self._env.get("CUDA_VISIBLE_DEVICES")
        info["cuda_device_order"] = self._env.get("CUDA_DEVICE_ORDER")
        return info

    def host_info(self) -> dict[str, Any]:
        """GPU facts for run.json's host section (keys made to merge into it): `gpus` (name,
        UUID, NVML index, memory), `nvidia_driver_version`, `cuda_driver_version`, ...; with
        no GPUs to read, `gpus: []` and `gpus_unavailable: reason`. Works after stop()."""
        if not self.ensure_open():
            return {"gpus": [], "gpus_unavailable": self.reason or "NVML not opened"}
        return dict(self._info)

    def _read(self, d: Device, group: str) -> dict[str, float | int]:
        nv, h = self._nvml, d.handle
        if group == "energy":
            return {"energy_mj": int(nv.nvmlDeviceGetTotalEnergyConsumption(h))}
        if group == "memory":
            m = nv.nvmlDeviceGetMemoryInfo(h)
            return {"mem_used_bytes": int(m.used), "mem_total_bytes": int(m.total)}
        if group == "utilization":
            u = nv.nvmlDeviceGetUtilizationRates(h)
            return {"util_gpu_pct": float(u.gpu), "util_mem_pct": float(u.memory)}
        if group == "power":
            return {"power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0}  # mW -> W
        return {"sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))}

    def _sample(self, now_ns: int) -> None:
        seq = self._seq
        self._seq += 1
        for d in self.devices:
            if d.lost is not None:
                continue
            vals: dict[str, float | int] = {}
            t_ns = time.perf_counter_ns()  # per device: stamps the energy read that follows
            for g in _GROUPS:
                if g in d.skipped:
                    continue
                try:
                    vals.update(self._read(d, g))
                except self._skip as e:
                    d.skipped[g] = described(e)
                except self._lost as e:
                    d.lost = f"device lost at t_ns={t_ns}: {described(e)}"
                    break
                except Exception:
                    pass  # transient (timeout, not ready): this value is missing this time
            if d.lost is not None:
                continue
            self.rows.append((seq, t_ns, d.pos, d.index, d.uuid, *(vals.get(c) for c in _VALUES)))
        if self.devices and all(d.lost for d in self.devices):
            raise RuntimeError("every GPU was lost")

    def _has_data(self) -> bool:
        return bool(self.rows)

    def write(self, run_dir: Path) -> list[str]:
        return self._write_rows(run_dir, "gpu.parquet", COLUMNS)

    def summary(self, output_tokens: int | None = None) -> dict[str, Any]:
        try:
            out = self._unavailable_summary() or self._summarize()
        except Exception as e:
            return unavailable(f"summary failed: {described(e)}")
        return finalize(out, output_tokens) if output_tokens is not None else out

    def _summarize(self) -> dict[str, Any]:
        col = {c: i for i, c in enumerate(COLUMNS)}
        w = self.window
        per_gpu, energies, totals_by_seq = [], [], {}
        for d in self.devices:
            rows = [r for r in self.rows if r[col["gpu"]] == d.pos]
            t = [r[col["t_ns"]] for r in rows]
            get = lambda c: [r[col[c]] for r in rows]  # noqa: E731
            energy_mj = interp_delta(t, get("energy_mj"), w) if w else None
            energies.append(None if energy_mj is None else energy_mj / 1000.0)
            for r in rows:
                if (w is None or w[0] <= r[col["t_ns"]] <= w[1]) and r[col["mem_used_bytes"]] is not None:
                    totals_by_seq[r[0]] = totals_by_seq.get(r[0], 0) + r[col["mem_used_bytes"]]
            peak_mem = peak_in(t, get("mem_used_bytes"), w)
            per_gpu.append({
                "gpu": d.pos, "nvml_index": d.index, "uuid": d.uuid, "name": d.name,
                "samples_in_window": int(sum(1 for x in t if w is None or w[0] <= x <= w[1])),
                "peak_mem_used_bytes": None if peak_mem is None else int(peak_mem),
                "mem_total_bytes": d.mem_total,
                "mean_util_gpu_pct": finite(mean_in(t, get("util_gpu_pct"), w), 2),
                "mean_util_mem_pct": finite(mean_in(t, get("util_mem_pct"), w), 2),
                "mean_power_w": finite(mean_in(t, get("power_w"), w), 3),
                "peak_power_w": finite(peak_in(t, get("power_w"), w), 3),
                "mean_sm_clock_mhz": finite(mean_in(t, get("sm_clock_mhz"), w), 1),
                "energy_j": finite(energies[-1], 3),
                "skipped": dict(d.skipped),
                "lost": d.lost,
            })  # fmt: skip
        powers = [g["mean_power_w"] for g in per_gpu]
        utils = [g["mean_util_gpu_pct"] for g in per_gpu if g["mean_util_gpu_pct"] is not None]
        total = {
            # Peak of the summed memory at one sample instant, not the sum of per-GPU peaks.
            "peak_mem_used_bytes": max(totals_by_seq.values()) if totals_by_seq else None,
            "mean_util_gpu_pct": finite(sum(utils) / len(utils), 2) if utils else None,
            "mean_power_w": finite(sum(powers), 3) if powers and None not in powers else None,
            "energy_j": finite(sum(energies), 3) if energies and None not in energies else None,
        }
        mem = total["peak_mem_used_bytes"]
        line = headline([
            ("util %", total["mean_util_gpu_pct"], ".0f"), ("power W", total["mean_power_w"], ".0f"),
            ("energy J", total["energy_j"], ".4g"), ("peak memory GiB", None if mem is None else mem / 2**30, ".2f"),
        ])  # fmt: skip
        out: dict[str, Any] = {
            "available": True,
            "headline": f"{len(per_gpu)} GPU(s): {line}",
            "interval_s": self.interval_s,
            "window_ns": list(w) if w else None,
            "energy_method": "NVML total-energy counter, linearly interpolated at the window marks",
            "gpus": per_gpu,
            "total": total,
        }
        if self.reason:
            out["stopped_early"] = self.reason
        return out
