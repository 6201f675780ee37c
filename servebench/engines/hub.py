"""May servebench download from the Hugging Face hub? Only when the user has said so by
holding a token (HF_TOKEN / HUGGING_FACE_HUB_TOKEN, or the file `huggingface-cli login`
writes), the hub is not switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), and it answers
a TCP connect within seconds. Otherwise nothing is attempted: an offline host never waits on
retries, and a host without a token never fetches anything behind the user's back.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

_TRUE = ("1", "true", "yes", "on")


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def token() -> str | None:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    home = hf_home()
    path = Path(os.environ.get("HF_TOKEN_PATH") or home / "token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def why_not(timeout_s: float = 3.0) -> str | None:
    """None when a download may be tried; else the reason, for the error message."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    if not token():
        return "no hub token (set HF_TOKEN or run `huggingface-cli login` to allow downloads)"
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError as e:
        return f"the hub ({url.hostname}) is unreachable: {e.strerror or type(e).__name__}"
    return None


def cached_snapshot(model: str, cache: Path) -> Path | None:
    """The directory of hub id `model` in the HF cache rooted at `cache` (HF_HOME layout:
    hub/models--org--name/snapshots/<rev>), for engines that load only a local directory. The
    revision refs/main names wins; else the newest snapshot; only one holding config.json counts."""
    if "/" not in model or model.startswith(("/", ".", "~")):
        return None
    repo = cache / "hub" / ("models--" + model.replace("/", "--"))
    snaps = repo / "snapshots"
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    found = [d for d in ([snaps / main] if main else []) if (d / "config.json").is_file()]
    if not found and snaps.is_dir():
        found = sorted((d for d in snaps.iterdir() if (d / "config.json").is_file()),
                       key=lambda d: d.stat().st_mtime, reverse=True)
    return found[0] if found else None
