"""Where a plan runs, by name: `EXECUTORS[name](**options).run(plan, index, emit, limit)`. The
local executor runs its server groups one after another on this host (local.py); the Ray
executor places each on a node of a cluster (ray_executor.py), and is offered only where Ray
is installed."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

from servebench.sweep.local import ExecutorError, LocalExecutor

__all__ = ["EXECUTORS", "ExecutorError"]


def _ray(**options):
    from servebench.sweep.ray_executor import RayExecutor  # imports ray: only when asked for

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Any]] = {"local": LocalExecutor}
if importlib.util.find_spec("ray") is not None:
    EXECUTORS["ray"] = _ray
