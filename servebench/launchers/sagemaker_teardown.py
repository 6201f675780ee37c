"""Deleting what a SageMaker deploy created, as early as AWS allows, through any Ctrl-C.

AWS refuses DeleteEndpoint while the endpoint is Creating or Updating (it can stay Creating for
most of an hour). Its config and model can be deleted meanwhile, so they go at once; the
endpoint is then polled and deleted the moment its status leaves Creating: no wait for a
successful start that will be thrown away. Every further Ctrl-C or SIGTERM is held until the
deletions are done (the endpoint bills by the hour); a SIGKILL leaves the ledger and the tags,
which `servebench cleanup` reads.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from servebench.launchers.owner import Ledger
from servebench.errors import folded

BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")
DELETE = {"endpoint": ("delete_endpoint", "EndpointName"),
          "endpoint_config": ("delete_endpoint_config", "EndpointConfigName"),
          "model": ("delete_model", "ModelName")}


def err_text(e: BaseException) -> str:
    resp = getattr(e, "response", None) or {}
    return folded(resp.get("Error", {}).get("Message") or str(e))


def _missing(e: BaseException) -> bool:
    return "Could not find" in err_text(e) or "does not exist" in err_text(e)


def _kebab(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()


class Teardown:
    """Deletes `created` ((kind, name) in creation order), removing each from it and from the
    ledger once it is gone. What cannot be deleted is reported with the command that would."""

    def __init__(self, sm: Any, created: list[tuple[str, str]], ledger: Ledger, region: str | None, *,
                 progress: Callable[[str], None], sleep: Callable[[float], None], poll_s: float,
                 wait_s: float) -> None:
        self.sm, self.created, self.ledger, self.region = sm, created, ledger, region
        self.progress, self.sleep, self.poll_s, self.wait_s = progress, sleep, poll_s, wait_s

    def run(self) -> None:
        busy = []
        for kind, name in reversed(list(self.created)):  # the endpoint holds the config, the config the model
            if kind == "endpoint" and not self._delete_endpoint_now(name):
                busy.append(name)
            elif kind != "endpoint":
                self._delete(kind, name)
        for name in busy:
            self._delete_endpoint_when_allowed(name)

    def _gone(self, kind: str, name: str, said: str | None = "deleted") -> None:
        if (kind, name) in self.created:
            self.created.remove((kind, name))
        self.ledger.remove(kind, name)
        if said:
            self.progress(f"{said} sagemaker {kind.replace('_', ' ')} {name}")

    def _delete(self, kind: str, name: str) -> None:
        method, key = DELETE[kind]
        try:
            getattr(self.sm, method)(**{key: name})
        except Exception as e:
            if _missing(e):
                self._gone(kind, name, None)
            else:
                self._warn(kind, name, err_text(e))
            return
        self._gone(kind, name)

    def _delete_endpoint_now(self, name: str) -> bool:
        """Deleted (or gone); False when AWS refuses because it is still busy."""
        try:
            self.sm.delete_endpoint(EndpointName=name)
        except Exception as e:
            if _missing(e):
                self._gone("endpoint", name, None)
                return True
            status = self._status(name)
            if status in BUSY:
                self.progress(f"sagemaker endpoint {name} is {status}: AWS deletes it only after that ends; "
                              "deleting its config and model now, the endpoint the moment AWS allows")
                return False
            self._warn("endpoint", name, err_text(e))
            return True
        self._gone("endpoint", name)
        return True

    def _status(self, name: str) -> str | None:
        try:
            return self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except Exception as e:
            return "gone" if _missing(e) else None

    def _delete_endpoint_when_allowed(self, name: str) -> None:
        deadline = time.monotonic() + self.wait_s
        last = None
        while True:
            status = self._status(name)
            if status == "gone":
                return self._gone("endpoint", name, None)
            if status == "Deleting":
                return self._gone("endpoint", name, "deleting")
            if status is not None and status not in BUSY:
                return self._delete("endpoint", name)
            if time.monotonic() >= deadline:
                return self._warn("endpoint", name, f"still {status} after {self.wait_s:.0f}s")
            if status != last:
                self.progress(f"sagemaker endpoint {name} is still {status}; checking every {self.poll_s:.0f}s")
                last = status
            self.sleep(self.poll_s)

    def _warn(self, kind: str, name: str, why: str) -> None:
        """Dropped from this run's list (atexit would only fail again), kept in the ledger."""
        if (kind, name) in self.created:
            self.created.remove((kind, name))
        method, key = DELETE[kind]
        region = f" --region {self.region}" if self.region else ""
        self.progress(f"WARNING: could not delete sagemaker {kind.replace('_', ' ')} {name}: {why} -- it may still "
                      f"bill: run `servebench cleanup{region}` later, or by hand: "
                      f"aws sagemaker {method.replace('_', '-')} --{_kebab(key)} {name}{region}")
