"""Ray the way servebench needs it, for the sweep executor and `--workers ray:N`. Connecting:
an address nobody answers on fails at once in one line (ray.init would retry for minutes), any
failure is one line, and servebench's own signal handling survives: ray.init replaces the
SIGTERM handler with sys.exit, which would skip writing what was measured. And which node a
piece of work runs on (run.json `node`, the sweep index, `client.split`)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

from servebench.errors import first_line


class RayConnectError(RuntimeError):
    pass


def reachable(address: str | None, timeout_s: float = 5.0) -> None:
    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise RayConnectError(f"Ray address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayConnectError(f"cannot reach the Ray cluster at {address}: {e.strerror or type(e).__name__}") from None


def connect(address: str | None):
    """ray.init(address) (None: RAY_ADDRESS, else a new local cluster); returns the ray module."""
    try:
        import ray
    except ImportError:
        raise RayConnectError("Ray is not installed: pip install 'servebench[ray]'") from None
    reachable(address)
    main = threading.current_thread() is threading.main_thread()
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True, logging_level=logging.WARNING,
                 **({} if address else {"include_dashboard": False}))
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError: all one line
        raise RayConnectError(f"cannot connect to Ray at {address or 'a new local cluster'}: {first_line(e)}") from None
    finally:
        for s, h in kept.items():
            if h is not None:
                signal.signal(s, h)
    return ray


def node_facts() -> dict[str, Any]:
    """Which node this is, as Ray and the OS name it (run.json `node`, index `node`)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    facts: dict[str, Any] = {"id": node_id, "ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname()}
    try:
        me = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        facts["resources"] = me.get("Resources", {})
    except Exception:  # noqa: BLE001 - facts are a courtesy; the run stands without them
        pass
    try:
        facts["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        facts["accelerator_ids"] = {k: v for k, v in ray.get_runtime_context().get_accelerator_ids().items() if v}
    except Exception:  # noqa: BLE001
        pass
    facts["label"] = f"{facts['hostname']}:{node_id[:8]}"
    return facts
