"""Checks made before a launch spends money or hours, each failing in one line.

Docker/process on a GPU host: the GPUs asked for exist (NVML), and the disk under the HF cache
holds the weights still to be downloaded (a 130 GB download that fails at 90% costs an hour).
SageMaker: the account's quota for the instance type as an endpoint, where Service Quotas
answers (a refusal only costs a failed create call, but says nothing about why).
Checks that cannot be made (no NVML, no permission) are reported as notes, never guessed.
"""

from __future__ import annotations

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
