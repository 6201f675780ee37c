"""Checks before a launch spends money or hours: GPUs asked for exist, the weights fit on the
disk under the HF cache (what is already cached counted)."""

from __future__ import annotations

import shutil

import pytest

from servebench.launchers import preflight
from servebench.launchers.base import LaunchError


class FakeNvml:
    def __init__(self, count=4, cuda=12040):
        self.count, self.cuda, self.shut = count, cuda, False

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlShutdown(self):
        self.shut = True


def test_gpus_asked_for_must_exist():
    nv = FakeNvml()
    assert preflight.check_gpus([0, 3], nv) == "gpus: 4 visible, driver supports CUDA up to 12.4" and nv.shut
    with pytest.raises(LaunchError, match=r"^GPU 4,5,6,7 asked for, this host has 4 \(0-3\)$"):
        preflight.check_gpus(list(range(8)), FakeNvml())
    assert preflight.check_gpus([], None) == "gpus: none asked for"


def test_no_nvml_is_a_note():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    assert preflight.check_gpus(None, Broken()) == "gpus: not checked (NVML: NVML Shared Library Not Found)"


def free(monkeypatch, gb):
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**13, 0, int(gb * 1e9)))


def test_disk_for_the_weights(tmp_path, monkeypatch):
    free(monkeypatch, 100)
    with pytest.raises(LaunchError, match=r"^meta-llama/Llama-2-70b-hf needs ~154 GB more in the HF cache .*only 100 GB free"):
        preflight.check_disk(tmp_path / "hf", "meta-llama/Llama-2-70b-hf")  # the cache dir need not exist yet
    assert preflight.check_disk(tmp_path, "meta-llama/Llama-2-7b-hf").startswith("disk: ~15 GB to download")


def test_cached_weights_are_not_downloaded_again(tmp_path, monkeypatch):
    free(monkeypatch, 20)
    blobs = tmp_path / "hub" / "models--meta-llama--Llama-2-13b-hf" / "blobs"
    blobs.mkdir(parents=True)
    with open(blobs / "a", "wb") as f:
        f.truncate(int(20e9))  # sparse: 20 of the 26 GB already here
    assert preflight.check_disk(tmp_path, "meta-llama/Llama-2-13b-hf").startswith("disk: ~7 GB to download")
