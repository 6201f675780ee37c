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


def cfg(*env, **labels):
    return {"Env": list(env), "Labels": labels or None}


def test_image_cuda_is_read_from_what_the_runtime_enforces_first():
    assert preflight.image_cuda(cfg("PATH=/x", "CUDA_VERSION=12.8.1",
                                    "NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=tesla,driver>=470")) == ((12, 8), "NVIDIA_REQUIRE_CUDA")
    assert preflight.image_cuda(cfg("CUDA_VERSION=12.4.1")) == ((12, 4), "CUDA_VERSION")
    assert preflight.image_cuda(cfg(**{"com.nvidia.cuda.version": "11.8.0"})) == ((11, 8), "label com.nvidia.cuda.version")
    assert preflight.image_cuda(cfg("PATH=/usr/bin")) is None and preflight.image_cuda({}) is None


def test_an_image_newer_than_the_driver_is_one_line_before_the_container_starts():
    img = "vllm/vllm-openai:v0.11.0"
    with pytest.raises(LaunchError, match=r"^vllm/vllm-openai:v0\.11\.0 needs CUDA 12\.8 \(NVIDIA_REQUIRE_CUDA\), this host's "
                                          r"driver supports up to CUDA 12\.4: update the NVIDIA driver, or pin an image "
                                          r"built for CUDA 12\.4 or older \(launcher option image\)$"):
        preflight.check_image_cuda(img, cfg("CUDA_VERSION=12.8.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.8"), FakeNvml(cuda=12040))
    with pytest.raises(LaunchError, match=r"needs CUDA 12\.1 \(CUDA_VERSION\), this host's driver supports up to CUDA 11\.8"):
        preflight.check_image_cuda(img, cfg("CUDA_VERSION=12.1.0"), FakeNvml(cuda=11080))  # a major apart
    nv = FakeNvml(cuda=12080)
    assert preflight.check_image_cuda(img, cfg("NVIDIA_REQUIRE_CUDA=cuda>=12.4"), nv) == (
        "cuda: vllm/vllm-openai:v0.11.0 needs CUDA 12.4 (NVIDIA_REQUIRE_CUDA), this host's driver supports up to CUDA 12.8")
    assert nv.shut
    # newer minor, not enforced (no requirement, or the runtime told not to): minor-version compatibility may carry it
    assert preflight.check_image_cuda(img, cfg("CUDA_VERSION=12.8.0"), FakeNvml(cuda=12040)).startswith("cuda: warning: ")
    assert preflight.check_image_cuda(img, cfg("NVIDIA_REQUIRE_CUDA=cuda>=12.8", "NVIDIA_DISABLE_REQUIRE=1"),
                                      FakeNvml(cuda=12040)).startswith("cuda: warning: ")


def test_image_cuda_not_known_or_no_driver_is_a_note():
    assert preflight.check_image_cuda("x:1", cfg("PATH=/x"), FakeNvml()) == (
        "cuda: x:1 names no CUDA version (CUDA_VERSION, NVIDIA_REQUIRE_CUDA), not checked")

    class Broken(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("Driver Not Loaded")

    assert preflight.check_image_cuda("x:1", cfg("CUDA_VERSION=12.4.1"), Broken()) == (
        "cuda: x:1 needs CUDA 12.4; driver not checked (NVML: Driver Not Loaded)")
