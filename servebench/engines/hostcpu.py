"""CPU engines: pick the weights dtype the host runs fastest, and notice a slow path in the log.

bfloat16 is fast on a CPU only with native bf16 instructions (AVX512_BF16, AMX). Without them
vLLM CPU cannot build its oneDNN bf16 GEMM, logs "Failed to create oneDNN linear, fallback to
torch linear", and runs ~3x slower than float32 (measured: docs/performance.md). The preset
models are stored as bfloat16, so an engine's "auto" dtype would take that path on such a host.

A spec opts in with `cpu_dtype` (flag + the two choices); the process launcher applies it only
on a host without an NVIDIA GPU and only when the user did not pass the flag themselves. The
choice and its reason go to run.json (server.info.dtype). `slow_path_log` lines seen in the
server log after start-up become server.info.slow_path and a report warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo has it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The `flags` of the first CPU in /proc/cpuinfo (empty off Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / arm
            return set(line.split(":", 1)[1].split())
    return set()


def gpu_present() -> bool:
    """An NVIDIA GPU is visible (then the engine's own dtype choice stands)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _user_value(flag: str, args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def choose_dtype(rule: Any, extra_args: list[str], gpus: list[int] | None, *,
                 flags: set[str] | None = None, gpu: bool | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """(args to add, the record for run.json). `rule` is a spec's CpuDtype or None."""
    if rule is None:
        return [], None
    user = _user_value(rule.flag, extra_args)
    if user is not None:
        return [], {"dtype": user, "source": "user", "why": f"{rule.flag} given with --server-arg"}
    if gpus or (gpu_present() if gpu is None else gpu):
        return [], {"dtype": None, "source": "engine", "why": "GPU host: the engine's own default"}
    flags = cpu_flags() if flags is None else flags
    native = sorted(f for f in BF16_FLAGS if f in flags)
    shown = sorted(f for f in _SHOWN if f in flags)
    if native:
        dtype, why = rule.fast, f"CPU has {', '.join(native)}: bfloat16 runs natively"
    else:
        dtype = rule.fallback
        why = (f"CPU lacks {' and '.join(BF16_FLAGS)} (has {', '.join(shown) or 'neither'}): bfloat16 would "
               f"take a slow fallback path, {rule.fallback} runs fastest")
    return [rule.flag, dtype], {"dtype": dtype, "source": "servebench cpu_dtype rule", "why": why,
                                "cpu_flags": shown}


def slow_path_lines(log_path: str | Path | None, patterns: list[str], limit: int = 3) -> list[str]:
    """Lines of the server log holding any of `patterns` (first `limit`, trimmed)."""
    if not patterns or not log_path or not Path(log_path).is_file():
        return []
    out: list[str] = []
    with open(log_path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if any(p in line for p in patterns):
                out.append(" ".join(line.split())[:240])
                if len(out) >= limit:
                    break
    return out


def slow_path_warning(info: dict[str, Any]) -> str | None:
    """The report line for a server that logged a slow CPU path (server.info.slow_path)."""
    lines = info.get("slow_path") or []
    if not lines:
        return None
    dt = (info.get("dtype") or {}).get("dtype")
    tail = f" (dtype {dt})" if dt else ""
    return f"CPU server ran a slow path{tail}: {lines[0]}"
