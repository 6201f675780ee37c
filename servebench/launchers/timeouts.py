"""Readiness time-outs sized for the model, one per phase.

A fixed 600 s wait fails a 70B model whose first start downloads ~130 GB of weights before it
loads them: the group is billed and nothing is measured. Unless the user gives a time-out
(`--ready-timeout`, `launcher_options.ready_timeout_s` per sweep group), the start-up wait is
BASE_S plus S_PER_GB for every GB of weights: read from a local directory, else estimated
from the parameter count in a hub id ("Llama-2-70b" -> 70e9 x 2 bytes; GPTQ/AWQ ~ 4 bits).
"""

from __future__ import annotations

import re
from pathlib import Path

from servebench.launchers.base import LaunchRequest

BASE_S = 600.0
S_PER_GB = 20.0  # ~50 MB/s of download plus loading, the slow end of a cloud host's network
PROBE_S = 300.0  # the first generation after ready: compilation, CUDA graphs
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
_PARAMS = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*b(?![a-z])", re.I)


def weights_gb(model: str) -> float | None:
    """GB of weights: summed from a local directory, estimated from a hub id, else None."""
    path = Path(model).expanduser()
    if path.is_dir():
        total = sum(f.stat().st_size for pat in WEIGHT_FILES for f in path.rglob(pat) if f.is_file())
        return total / 1e9
    m = _PARAMS.search(model.rsplit("/", 1)[-1].replace("-", " ").replace("_", " "))
    if not m:
        return None
    low_bit = re.search(r"gptq|awq|int4|4bit|q4", model, re.I)
    return float(m.group(1)) * (0.55 if low_bit else 2.0)


def ready_timeout(req: LaunchRequest) -> float:
    """Seconds for start-up (container/process start, weight download and load, health)."""
    if req.ready_timeout_s is not None:
        return float(req.ready_timeout_s)
    return BASE_S + S_PER_GB * (weights_gb(req.model) or 0.0)


def option_s(req: LaunchRequest, key: str, default: float) -> float:
    """A per-phase time-out from launcher options (strings in sweep configs), else `default`."""
    value = req.options.get(key)
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise ValueError(f"launcher option {key}={value!r} is not a number of seconds") from None
