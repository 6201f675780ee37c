"""Checks made before a launch spends money or hours, each failing in one line.

Docker/process on a GPU host: the GPUs asked for exist (NVML), and the disk under the HF cache
holds the weights still to be downloaded (a 130 GB download that fails at 90% costs an hour).
SageMaker: the account's quota for the instance type as an endpoint, where Service Quotas
answers (a refusal only costs a failed create call, but says nothing about why).
Docker with GPUs: the image's CUDA against the driver's (an image whose NVIDIA_REQUIRE_CUDA
the driver cannot meet is refused by the NVIDIA container runtime, after a pull of many GB).
Checks that cannot be made (no NVML, no permission) are reported as notes, never guessed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.errors import folded
from servebench.launchers.timeouts import WEIGHT_FILES, weights_gb

HEADROOM = 1.1  # partial downloads and the tokenizer beside the weights


def cached_gb(cache: Path, model: str) -> float:
    """GB of this hub model already in the cache: hub layout (vLLM, SGLang) or flat (TGI's /data)."""
    if "/" not in model or Path(model).expanduser().exists():
        return 0.0
    folder = "models--" + model.replace("/", "--")
    total = 0
    for d in (cache / "hub" / folder, cache / folder):
        if d.is_dir():  # blobs hold the bytes; snapshots are links to them
            total += sum(f.stat().st_size for f in (d / "blobs").glob("*") if f.is_file())
            total += sum(f.stat().st_size for pat in WEIGHT_FILES for f in (d / "snapshots").rglob(pat)
                         if f.is_file() and not f.is_symlink())
    return total / 1e9


def check_disk(cache: Path, model: str) -> str:
    """LaunchError when the weights still to download do not fit; else a note."""
    need = weights_gb(model)
    if need is None or Path(model).expanduser().exists():
        return "disk: weights local or size unknown, not checked"
    todo = max(need - cached_gb(cache, model), 0.0) * HEADROOM
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 1e9
    if todo > free:
        raise LaunchError(f"{model} needs ~{todo:.0f} GB more in the HF cache {cache}, only {free:.0f} GB free there: "
                          f"free space or point launcher option hf_cache (or HF_HOME) at a bigger disk")
    return f"disk: ~{todo:.0f} GB to download into {cache}, {free:.0f} GB free"


def check_gpus(gpus: list[int] | None, nvml: Any = None) -> str:
    """LaunchError when a GPU index asked for does not exist; the driver's CUDA version as a note."""
    if gpus == []:
        return "gpus: none asked for"
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception as e:  # no driver here, or NVML not installed: docker says so at create
        return f"gpus: not checked (NVML: {folded(str(e)) or type(e).__name__})"
    try:
        count = int(nvml.nvmlDeviceGetCount())
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        missing = [g for g in gpus or [] if not 0 <= g < count]
        if missing:
            raise LaunchError(f"GPU {','.join(map(str, missing))} asked for, this host has {count} (0-{count - 1})")
        return f"gpus: {count} visible, driver supports CUDA up to {cuda // 1000}.{cuda % 1000 // 10}"
    finally:
        nvml.nvmlShutdown()


def image_cuda(config: dict) -> tuple[tuple[int, int], str] | None:
    """((major, minor), where it was read) from an image's config (`docker inspect`'s Config):
    NVIDIA_REQUIRE_CUDA (what the container runtime enforces), else CUDA_VERSION, else the
    com.nvidia.cuda.version label. None when the image names none (not a CUDA image, or unknown)."""
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    m = re.search(r"cuda>=(\d+)\.(\d+)", env.get("NVIDIA_REQUIRE_CUDA", ""))
    if m:
        return (int(m[1]), int(m[2])), "NVIDIA_REQUIRE_CUDA"
    for where, value in (("CUDA_VERSION", env.get("CUDA_VERSION")),
                         ("label com.nvidia.cuda.version", (config.get("Labels") or {}).get("com.nvidia.cuda.version"))):
        m = re.match(r"(\d+)\.(\d+)", value or "")
        if m:
            return (int(m[1]), int(m[2])), where
    return None


def driver_cuda(nvml: Any = None) -> tuple[int, int] | str:
    """The newest CUDA the host's driver supports, or why it could not be read."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception as e:
        return f"NVML: {folded(str(e)) or type(e).__name__}"
    try:
        v = int(nvml.nvmlSystemGetCudaDriverVersion())
        return v // 1000, v % 1000 // 10
    finally:
        nvml.nvmlShutdown()


def check_image_cuda(image: str, config: dict, nvml: Any = None) -> str:
    """LaunchError, before the container starts, when the image needs a newer CUDA than the
    driver supports and the NVIDIA runtime would refuse it (NVIDIA_REQUIRE_CUDA), or the major
    version differs; a same-major newer minor without that requirement may still run (CUDA
    minor-version compatibility), so it is a warning."""
    need = image_cuda(config)
    if need is None:
        return f"cuda: {image} names no CUDA version (CUDA_VERSION, NVIDIA_REQUIRE_CUDA), not checked"
    (want, where), have = need, driver_cuda(nvml)
    if isinstance(have, str):
        return f"cuda: {image} needs CUDA {want[0]}.{want[1]}; driver not checked ({have})"
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    enforced = where == "NVIDIA_REQUIRE_CUDA" and env.get("NVIDIA_DISABLE_REQUIRE", "") in ("", "0", "false")
    shown = f"{image} needs CUDA {want[0]}.{want[1]} ({where}), this host's driver supports up to CUDA {have[0]}.{have[1]}"
    if want > have and (enforced or want[0] != have[0]):
        raise LaunchError(f"{shown}: update the NVIDIA driver, or pin an image built for CUDA {have[0]}.{have[1]} "
                          "or older (launcher option image)")
    if want > have:
        return f"cuda: warning: {shown}; it may run under CUDA minor-version compatibility"
    return f"cuda: {shown}"


def check_quota(quotas: Any, instance_type: str, count: int) -> str:
    """SageMaker's "<type> for endpoint usage" quota, LaunchError when below `count`."""
    want = f"{instance_type} for endpoint usage"
    try:
        for page in quotas.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"):
            for q in page.get("Quotas", []):
                if q.get("QuotaName") == want:
                    if q.get("Value", 0) < count:
                        raise LaunchError(f"the account's quota '{want}' is {q.get('Value', 0):.0f} (need {count}): "
                                          "request an increase in the Service Quotas console first")
                    return f"quota: {want} = {q['Value']:.0f}"
    except LaunchError:
        raise
    except Exception as e:  # no permission for Service Quotas: the create call will tell
        resp = getattr(e, "response", None) or {}
        return f"quota: not checked ({folded(resp.get('Error', {}).get('Code') or type(e).__name__)})"
    return f"quota: {want} not listed, not checked"


def run_checks(checks: list[Callable[[], str]], progress: Callable[[str], None]) -> None:
    for check in checks:
        progress(f"preflight {check()}")


def local_checks(req: LaunchRequest, cache: Path, nvml: Any = None) -> list[Callable[[], str]]:
    return [lambda: check_gpus(req.gpus, nvml), lambda: check_disk(cache, req.model)]
