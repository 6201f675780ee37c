"""Hardware catalog: GPUs by the names users say (and NVML reports), plus this host's CPU.

Figures live in data/hardware.json with the source of every row. A CPU host has no
datasheet we can trust for "memory bandwidth a server sees", so it is measured once
(hostbw) and cached.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from servebench.estimate.hardware import Hardware


def _norm(name: str) -> str:
    s = name.lower().replace("nvidia ", "").replace("geforce ", "")
    return re.sub(r"[^a-z0-9.]+", "-", s).strip("-")


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(resources.files("servebench.estimate").joinpath("data/hardware.json").read_text())


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    idx: dict[str, str] = {}
    for key, row in _data()["gpus"].items():
        for name in [key, *row.get("aliases", []), *row.get("nvml_names", []), row["label"]]:
            idx[_norm(name)] = key
    return idx


def gpu_names() -> list[str]:
    return sorted(_data()["gpus"])


def _build(key: str) -> Hardware:
    row = _data()["gpus"][key]
    fields = {k: v for k, v in row.items() if k in Hardware.__slots__ and v is not None}
    return Hardware(key=key, **fields)


def lookup(name: str) -> Hardware:
    """'a800', 'A800-80GB-SXM', 'NVIDIA A100-SXM4-40GB', 'h200', 'cpu' -> Hardware.
    Raises KeyError with the known names when nothing matches."""
    if _norm(name) in ("cpu", "host", "host-cpu"):
        from servebench.estimate.hostbw import host_hardware

        return host_hardware()
    n = _norm(name)
    key = _index().get(n)
    if key is None:
        # "A800-SXM4-80GB-something": the longest catalog name that the given name starts with
        hits = sorted((k for k in _index() if n.startswith(k) and len(k) >= 3), key=len, reverse=True)
        key = _index()[hits[0]] if hits else None
    if key is None:
        raise KeyError(f"unknown GPU {name!r} (known: {', '.join(gpu_names())}, cpu)")
    return _build(key)


def instance(instance_type: str) -> tuple[Hardware, int] | None:
    """ml.g5.12xlarge -> (A10G, 4); also accepts the EC2 name without 'ml.'."""
    table = _data()["instances"]
    t = instance_type.strip().lower()
    row = table.get(t) or table.get("ml." + t)
    return (_build(row[0]), int(row[1])) if row else None
