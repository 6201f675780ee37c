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


def _other_part(rest: str, key: str) -> bool:
    """The rest of a name names a form factor or memory size that the row `key` is not."""
    row = _data()["gpus"][key]
    known = " ".join(_norm(x) for x in [key, row["label"], *row.get("aliases", []), *row.get("nvml_names", [])])
    parts = lambda text: set(re.findall(r"pcie|sxm|nvl|\d+(?=-?gb?\b)", text))  # noqa: E731
    return not parts(rest) <= parts(known)


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
    near = None
    if key is None:
        # "A800-SXM4-80GB-something": the longest catalog name that the given name starts with,
        # unless the rest names another part (a form factor or a memory size: "h100-80gb-pcie"
        # is not the H100 SXM row, "a800-40gb" not the 80GB one)
        hits = sorted((k for k in _index() if n.startswith(k) and len(k) >= 3), key=len, reverse=True)
        if hits and _other_part(n[len(hits[0]):], _index()[hits[0]]):
            near = _index()[hits[0]]
        elif hits:
            key = _index()[hits[0]]
    if key is None:
        said = f"; not {near}, whose form factor or memory differs" if near else ""
        raise KeyError(f"unknown GPU {name!r}{said} (known: {', '.join(gpu_names())}, cpu)")
    return _build(key)


def instance(instance_type: str) -> tuple[Hardware, int] | None:
    """ml.g5.12xlarge -> (A10G, 4); also accepts the EC2 name without 'ml.'."""
    table = _data()["instances"]
    t = instance_type.strip().lower()
    row = table.get(t) or table.get("ml." + t)
    return (_build(row[0]), int(row[1])) if row else None
