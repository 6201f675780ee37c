"""Who started a cloud resource or container, so leftovers of a killed run can be found.

Every SageMaker resource is tagged and every container labelled with this process's run id,
host, pid and start time; each SageMaker resource is also written to a ledger file under the
state directory before its create call. A SIGKILL of servebench (or a lost laptop lid) skips
every teardown path; `servebench cleanup` and the next docker launch then find what is left:
on this host, a resource whose owner process no longer runs is a leftover.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

RUN_ID = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
KEYS = ("run", "host", "pid", "started")


def owner() -> dict[str, str]:
    """This process as an owner: the start time guards against a reused pid."""
    return {"run": RUN_ID, "host": socket.gethostname(), "pid": str(os.getpid()),
            "started": str(int(psutil.Process().create_time()))}


def owner_alive(o: dict[str, str]) -> bool | None:
    """True/False for an owner on this host; None where it cannot be told (another host,
    missing fields): such resources are left alone unless the user says otherwise."""
    if o.get("host") != socket.gethostname() or not str(o.get("pid", "")).isdigit():
        return None
    try:
        p = psutil.Process(int(o["pid"]))
        return abs(p.create_time() - float(o.get("started") or 0)) < 2 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True


def docker_labels(engine: str) -> dict[str, str]:
    return {"servebench": "1", "servebench.engine": engine, **{f"servebench.{k}": v for k, v in owner().items()}}


def from_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: labels[f"servebench.{k}"] for k in KEYS if f"servebench.{k}" in labels}


def aws_tags() -> list[dict[str, str]]:
    return [{"Key": f"servebench:{k}", "Value": v} for k, v in owner().items()]


def from_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    by = {t["Key"]: t["Value"] for t in tags}
    return {k: by[f"servebench:{k}"] for k in KEYS if f"servebench:{k}" in by}


def state_dir() -> Path:
    base = os.environ.get("SERVEBENCH_STATE_DIR") or Path(
        os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "servebench"
    return Path(base)


class Ledger:
    """One JSON file per run: the SageMaker resources it may have created and not yet deleted.
    Written before each create call (a Ctrl-C mid-call may still have created it)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "sagemaker" / f"{RUN_ID}.json"

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"owner": owner(), "resources": []}

    def _write(self, data: dict[str, Any]) -> None:
        if not data["resources"]:
            self.path.unlink(missing_ok=True)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
        except OSError:  # a read-only home must not stop a deploy; the tags still find it
            pass

    def add(self, kind: str, name: str, region: str | None) -> None:
        data = self._read()
        data["resources"].append({"kind": kind, "name": name, "region": region})
        self._write(data)

    def remove(self, kind: str, name: str) -> None:
        data = self._read()
        data["resources"] = [r for r in data["resources"] if (r["kind"], r["name"]) != (kind, name)]
        self._write(data)


def ledgers(directory: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every run's ledger: (file, {"owner": ..., "resources": [...]})."""
    d = directory or state_dir() / "sagemaker"
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append((p, json.loads(p.read_text())))
        except (OSError, ValueError):
            continue
    return out
