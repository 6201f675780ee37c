"""Which NVML devices are the run's GPUs, and whether the server's GPUs are ours at all."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from servebench.telemetry.periodic import Unavailable


def text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def is_local(base_url: str) -> bool:
    """True when the server runs on this host (so its GPUs are our GPUs)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # sagemaker://..., anything we can't place
    host = parts.hostname
    if host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return False  # a DNS name other than localhost: assume another machine
    try:
        import psutil

        return any(a.address == host for addrs in psutil.net_if_addrs().values() for a in addrs)
    except Exception:
        return False


def parse_visible(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES -> tokens (indices or UUIDs); None when unset."""
    if value is None:
        return None
    toks = [t.strip() for t in value.split(",")]
    out: list[str] = []
    for t in toks:
        # CUDA stops at the first invalid entry; "-1" or empty hides every device.
        if not t or t.startswith("-"):
            break
        out.append(t)
    return out


@dataclass(slots=True)
class Device:
    pos: int  # position in the run's GPU list (0..n-1)
    index: int  # NVML index
    uuid: str
    name: str
    handle: Any
    skipped: dict[str, str] = field(default_factory=dict)  # group -> reason
    lost: str | None = None
    mem_total: int | None = None


def resolve_devices(nvml: Any, gpus: list[int] | None, visible: list[str] | None) -> list[Device]:
    """Map the run's GPUs to NVML devices by UUID.

    --gpus are CUDA indices as this process sees them, i.e. positions in CUDA_VISIBLE_DEVICES
    when that is set. Bare indices are NVML (PCI bus) order, which equals CUDA's order only
    with CUDA_DEVICE_ORDER=PCI_BUS_ID; UUIDs (or unique UUID prefixes, as CUDA accepts) are
    unambiguous.
    """
    count = int(nvml.nvmlDeviceGetCount())
    all_devs = []
    for i in range(count):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        all_devs.append((i, h, text(nvml.nvmlDeviceGetUUID(h))))
    if visible is not None:
        if gpus is None:
            tokens = visible
        else:
            bad = [g for g in gpus if not 0 <= g < len(visible)]
            if bad:
                raise Unavailable(f"GPU {bad[0]} is not in CUDA_VISIBLE_DEVICES={','.join(visible)}")
            tokens = [visible[g] for g in gpus]
    else:
        tokens = [str(g) for g in gpus] if gpus is not None else [str(i) for i in range(count)]
    if not tokens:
        raise Unavailable("no GPUs selected (CUDA_VISIBLE_DEVICES hides every device)")
    out: list[Device] = []
    for pos, tok in enumerate(tokens):
        if tok.isdigit():
            hits = [d for d in all_devs if d[0] == int(tok)]
        else:
            hits = [d for d in all_devs if d[2] == tok] or [d for d in all_devs if d[2].startswith(tok)]
        if len(hits) != 1:
            what = "matches no" if not hits else "matches several"
            raise Unavailable(f"GPU '{tok}' {what} NVML device ({count} visible to NVML)")
        i, h, uuid = hits[0]
        out.append(Device(pos=pos, index=i, uuid=uuid, name=text(nvml.nvmlDeviceGetName(h)), handle=h))
    return out
