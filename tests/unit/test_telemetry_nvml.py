"""NVML sampler against a fake nvml module (exactly the functions the sampler calls), plus
the real pynvml path on this machine."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pandas as pd
import pytest

from servebench.telemetry import finalize, make_samplers
from servebench.telemetry.gpus import is_local, parse_visible, resolve_devices
from servebench.telemetry.nvml import NvmlSampler
from servebench.launchers.base import Server


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's names)
    pass


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
    pass


class FakeNvml:
    """Energy grows at exactly `watts` per GPU on the perf_counter clock, so the window
    energy is known: watts * window seconds."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVML_CLOCK_SM = 1

    def __init__(self, uuids=("GPU-aaa", "GPU-bbb"), watts=(200.0, 300.0), unsupported=(), lose_after=None, init_error=None):  # fmt: skip
        self.uuids, self.watts = list(uuids), list(watts)
        self.unsupported = set(unsupported)  # {(index, "power"), ...}
        self.lose_after = lose_after or {}  # index -> samples (energy reads) before GpuIsLost
        self.init_error = init_error
        self.calls: dict[tuple[int, str], int] = {}
        self.inited = 0
        self.t_base = time.perf_counter_ns()

    def _call(self, h, what):
        self.calls[(h, what)] = self.calls.get((h, what), 0) + 1
        if (h, what) in self.unsupported:
            raise NVMLError_NotSupported("Not Supported")
        if h in self.lose_after and self.calls.get((h, "energy"), 0) > self.lose_after[h]:
            raise NVMLError_GpuIsLost("GPU is lost")

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error
        self.inited += 1

    def nvmlShutdown(self):
        self.inited -= 1

    def nvmlDeviceGetCount(self):
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return self.uuids[h]

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA A10G" if h == 0 else "NVIDIA A100-SXM4-40GB"  # old pynvml returned bytes

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._call(h, "energy")
        # mJ = W * ns / 1e6
        return int(5_000_000 + self.watts[h] * (time.perf_counter_ns() - self.t_base) / 1e6)

    def nvmlDeviceGetMemoryInfo(self, h):
        self._call(h, "memory")
        return SimpleNamespace(used=(10 + h) * 2**30, total=24 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h):
        self._call(h, "util")
        return SimpleNamespace(gpu=90 + h, memory=40)

    def nvmlDeviceGetPowerUsage(self, h):
        self._call(h, "power")
        return int(self.watts[h] * 1000)

    def nvmlDeviceGetClockInfo(self, h, clock):
        assert clock == self.NVML_CLOCK_SM
        self._call(h, "clock")
        return 1410


def run_sampler(s: NvmlSampler, seconds: float = 0.2) -> tuple[int, int]:
    s.start()
    time.sleep(0.03)
    w0 = time.perf_counter_ns()
    time.sleep(seconds)
    w1 = time.perf_counter_ns()
    time.sleep(0.03)
    s.mark_window(w0, w1)
    s.stop()
    return w0, w1


def test_samples_summary_and_energy_by_counter(tmp_path):
    nv = FakeNvml()
    s = NvmlSampler(gpus=None, interval_s=0.01, nvml=nv, env={})
    w0, w1 = run_sampler(s)
    summ = s.summary()
    assert summ["available"] is True
    win_s = (w1 - w0) / 1e9
    g0, g1 = summ["gpus"]
    assert (g0["uuid"], g1["uuid"]) == ("GPU-aaa", "GPU-bbb")
    assert g0["name"] == "NVIDIA A10G"  # bytes decoded
    # Counter difference, interpolated at the marks: exact for a constant-power fake.
    assert g0["energy_j"] == pytest.approx(200.0 * win_s, rel=2e-3)
    assert g1["energy_j"] == pytest.approx(300.0 * win_s, rel=2e-3)
    assert summ["total"]["energy_j"] == pytest.approx(500.0 * win_s, rel=2e-3)
    assert g0["mean_power_w"] == 200.0 and g1["mean_util_gpu_pct"] == 91.0
    assert g0["peak_mem_used_bytes"] == 10 * 2**30
    assert summ["total"]["peak_mem_used_bytes"] == 21 * 2**30  # summed at one instant
    assert g0["samples_in_window"] >= 5
    assert nv.inited == 0  # shut down on stop
    s.stop()
    assert nv.inited == 0  # and only once

    out = finalize({"gpu": summ}, output_tokens=1000)["gpu"]
    assert out["total"]["joules_per_output_token"] == pytest.approx(summ["total"]["energy_j"] / 1000, rel=1e-4)
    assert out["gpus"][1]["joules_per_output_token"] == pytest.approx(g1["energy_j"] / 1000, rel=1e-4)

    assert s.write(tmp_path) == ["gpu.parquet"]
    df = pd.read_parquet(tmp_path / "gpu.parquet")
    assert set(df["gpu"]) == {0, 1}
    assert df["t_ns"].is_monotonic_increasing or df.groupby("gpu")["t_ns"].apply(lambda x: x.is_monotonic_increasing).all()  # fmt: skip
    assert df["power_w"].iloc[0] == 200.0 and df["mem_total_bytes"].iloc[0] == 24 * 2**30


def test_not_supported_metric_is_skipped_once_not_retried():
    nv = FakeNvml(unsupported={(1, "power"), (0, "energy")})
    s = NvmlSampler(interval_s=0.01, nvml=nv, env={})
    run_sampler(s, 0.1)
    summ = s.summary()
    assert nv.calls[(1, "power")] == 1 and nv.calls[(0, "energy")] == 1
    assert nv.calls[(1, "memory")] > 5  # the rest kept being sampled
    g0, g1 = summ["gpus"]
    assert "power" in g1["skipped"] and "NotSupported" in g1["skipped"]["power"]
    assert g1["mean_power_w"] is None and g0["mean_power_w"] == 200.0
    assert g0["energy_j"] is None and g1["energy_j"] is not None
    assert summ["total"]["energy_j"] is None  # a total that silently missed a GPU would lie
    assert finalize(summ, 100)["total"]["joules_per_output_token"] is None


def test_device_lost_mid_run_stops_that_device_only():
    nv = FakeNvml(lose_after={1: 3})
    s = NvmlSampler(interval_s=0.01, nvml=nv, env={})
    run_sampler(s, 0.15)
    summ = s.summary()
    g0, g1 = summ["gpus"]
    assert g1["lost"] and "GpuIsLost" in g1["lost"] and g0["lost"] is None
    rows1 = [r for r in s.rows if r[2] == 1]
    rows0 = [r for r in s.rows if r[2] == 0]
    assert len(rows1) == 3 and len(rows0) > 8
    assert nv.calls[(1, "energy")] == 4 and nv.calls[(1, "memory")] == 1 + 3  # host_info + samples
    # never touched again after the loss: the last call was the energy read that failed
    assert summ["available"] is True and "stopped_early" not in summ


def test_all_devices_lost_stops_sampling_with_reason():
    nv = FakeNvml(uuids=["GPU-aaa"], watts=[100.0], lose_after={0: 2})
    s = NvmlSampler(interval_s=0.01, nvml=nv, env={})
    run_sampler(s, 0.08)
    summ = s.summary()
    assert summ["available"] is True and "every GPU was lost" in summ["stopped_early"]


@pytest.mark.parametrize(
    "visible,gpus,expect",
    [
        (None, None, [0, 1, 2]),
        (None, [2], [2]),
        ("2,0", None, [2, 0]),
        ("2,0", [1], [0]),  # --gpus index into CUDA_VISIBLE_DEVICES
        ("GPU-ccc,GPU-aaa", [1], [0]),
        ("GPU-cc", None, [2]),  # unique UUID prefix, as CUDA accepts
        ("1,-1,2", None, [1]),  # CUDA stops at the first invalid entry
    ],
)
def test_gpu_selection_by_uuid(visible, gpus, expect):
    nv = FakeNvml(uuids=["GPU-aaa", "GPU-abb", "GPU-ccc"], watts=[1, 1, 1])
    devs = resolve_devices(nv, gpus, parse_visible(visible))
    assert [d.index for d in devs] == expect
    assert [d.pos for d in devs] == list(range(len(expect)))


@pytest.mark.parametrize(
    "env,gpus,needle",
    [
        ({"CUDA_VISIBLE_DEVICES": "0"}, [1], "not in CUDA_VISIBLE_DEVICES"),
        ({}, [7], "matches no NVML device"),
        ({"CUDA_VISIBLE_DEVICES": "GPU-a"}, None, "matches several"),
        ({"CUDA_VISIBLE_DEVICES": ""}, None, "hides every device"),
    ],
)
def test_bad_gpu_selection_is_unavailable_with_reason(env, gpus, needle):
    nv = FakeNvml(uuids=["GPU-aaa", "GPU-abb"])
    s = NvmlSampler(gpus=gpus, interval_s=0.01, nvml=nv, env=env)
    s.start()
    s.stop()
    summ = s.summary()
    assert summ["available"] is False and needle in summ["reason"]
    assert nv.inited == 0  # init was undone


def test_host_info():
    s = NvmlSampler(gpus=[1], nvml=FakeNvml(), env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    info = s.host_info()
    assert info["nvidia_driver_version"] == "550.54.15" and info["cuda_driver_version"] == "12.4"
    assert info["gpus"] == [{"gpu": 0, "nvml_index": 1, "uuid": "GPU-bbb", "name": "NVIDIA A100-SXM4-40GB", "memory_total_bytes": 24 * 2**30}]  # fmt: skip
    assert info["cuda_device_order"] == "PCI_BUS_ID"


@pytest.mark.parametrize("url", ["http://10.1.2.3:8000", "sagemaker://my-endpoint", "https://api.example.com"])
def test_remote_server_is_unavailable_without_touching_nvml(url):
    nv = FakeNvml()
    s = NvmlSampler(nvml=nv, base_url=url, env={})
    s.start()
    s.stop()
    assert s.summary()["available"] is False and "not on this host" in s.summary()["reason"]
    assert nv.calls == {} and nv.inited == 0
    assert s.host_info() == {"gpus": [], "gpus_unavailable": s.summary()["reason"]}


def test_is_local():
    assert is_local("http://127.0.0.1:8000") and is_local("http://localhost:1") and is_local("http://[::1]:80")
    assert not is_local("http://192.0.2.10:80") and not is_local("sagemaker://x")


def test_init_failure_is_unavailable():
    s = NvmlSampler(nvml=FakeNvml(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found")), env={})
    s.start()
    s.stop()
    assert s.summary() == {"available": False, "reason": "NVML unavailable: NVMLError_LibraryNotFound: NVML Shared Library Not Found"}  # fmt: skip
    assert s.write(__import__("pathlib").Path("/nonexistent")) == []


def test_real_pynvml_path_on_this_machine(tmp_path):
    """No fake: whatever this host has. Here (no NVIDIA driver) that must be a clean
    'unavailable' with NVML's own reason; on a GPU host, real samples."""
    import pynvml

    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        truth = None
    except pynvml.NVMLError as e:
        truth = str(e)
    server = Server(base_url="http://127.0.0.1:9", engine="vllm", adapter="openai", pid=None)
    gpu = make_samplers(server, None, interval_s=0.01)[0]
    gpu.start()
    time.sleep(0.05)
    gpu.mark_window(time.perf_counter_ns() - 30_000_000, time.perf_counter_ns())
    gpu.stop()
    summ = gpu.summary()
    if truth is not None:
        assert summ["available"] is False
        assert summ["reason"].startswith("NVML unavailable: NVMLError") and truth in summ["reason"]
        assert gpu.write(tmp_path) == [] and gpu.host_info()["gpus"] == []
        assert truth in gpu.host_info()["gpus_unavailable"]
    else:
        assert summ["available"] is True and summ["gpus"]
