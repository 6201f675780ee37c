"""Process launcher: the engine's own command as a child process group on this host."""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from servebench.engines.hostcpu import choose_dtype, slow_path_lines
from servebench.engines.hub import hf_home
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.preflight import local_checks
from servebench.launchers.timeouts import ready_timeout
from servebench.signals import shielded
from servebench.launchers.readiness import free_port, log_tail, opening, redact_env, served_name, wait_ready
from servebench.engines.specs import EngineSpec, SpecError, load_spec, render_command, resolve_local_model


KILL_WAIT_S = 10.0


class ProcessLauncher:
    name = "process"

    def __init__(self, *, python: str = sys.executable, host: str = "127.0.0.1",
                 poll_s: float = 0.5, stop_timeout_s: float = 20.0) -> None:
        self.python = python
        self.host = host
        self.poll_s = poll_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.dtype_args: list[str] = []
        self.dtype: dict | None = None
        self.gguf: dict | None = None

    def command(self, spec: EngineSpec, req: LaunchRequest, port: int, convert: bool = True) -> list[str]:
        if spec.process is None:
            hint = "use --launcher docker" if spec.docker is not None else "benchmark a running server with --endpoint URL"
            raise SpecError(f"{spec.name} has no process section in {spec.source}; {hint}")
        model, options = self._model_file(spec, req, convert)
        values = {"python": self.python, "model": model, "host": self.host, "port": port,
                  "served_model_name": served_name(req)}
        # CPU host: the dtype it runs fastest, before the user's args (theirs win)
        self.dtype_args, self.dtype = choose_dtype(spec.cpu_dtype, req.extra_args, req.gpus)
        return render_command(spec, spec.process, values, gpus=req.gpus, options=options,
                              extra_args=self.dtype_args + list(req.extra_args))

    def _model_file(self, spec: EngineSpec, req: LaunchRequest, convert: bool = True) -> tuple[str, dict]:
        """GGUF engines: the model dir's GGUF file in the `quantize` type (converted once);
        the type is in the file, so it is no command-line option. Engines that load only a local
        directory (LightLLM): a hub id's snapshot in the HF cache."""
        if spec.model_format != "gguf":
            snap = resolve_local_model(spec, req.model, hf_home())
            return (str(snap) if snap else req.model), req.options
        from servebench.engines.gguf_export import ensure_gguf

        assert spec.process is not None
        opts = dict(req.options)
        qtype = str(opts.pop("quantize", None) or spec.process.defaults.get("quantize") or "f16")
        known = spec.flags.quantize_values
        if known and qtype.lower() not in known:
            raise SpecError(f"{spec.name} does not know quantization {qtype!r} (known: {', '.join(known)})")
        if not convert:  # a dry run names the file a launch would convert to
            from servebench.engines.gguf_export import gguf_path

            return str(gguf_path(req.model, qtype)), opts
        try:
            path = ensure_gguf(req.model, qtype)
        except (ValueError, OSError) as e:
            raise SpecError(f"{spec.name}: cannot make a GGUF file of {req.model}: {e}") from None
        self.gguf = {"file": str(path), "type": qtype.lower(), "bytes": path.stat().st_size}
        return str(path), opts

    def served(self, spec: EngineSpec, req: LaunchRequest) -> str:
        """The name requests must use: the spec's template (engines that cannot be told one), else
        the requested served name."""
        tpl = spec.process.served_name if spec.process else None
        return tpl.format_map({"model": req.model}) if tpl else served_name(req)

    def env(self, spec: EngineSpec, req: LaunchRequest) -> tuple[dict[str, str], dict[str, str]]:
        """(full child env, the part servebench chose, for run.json). The user's exported
        variables beat the spec's defaults; explicit req.env and --gpus beat both."""
        assert spec.process is not None
        chosen = {k: v for k, v in spec.process.env.items() if k not in os.environ}
        chosen.update(req.env)
        if req.gpus:
            chosen["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, req.gpus))
            chosen["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order NVML (and nvidia-smi) use
        return {**os.environ, **chosen}, chosen

    def dry_run(self, req: LaunchRequest) -> str:
        """The command start() would run, after the variables servebench sets for it (secret
        values shown by name only). Starts and converts nothing."""
        try:
            spec = load_spec(req.engine)
            argv = self.command(spec, req, req.port or free_port(self.host), convert=False)
        except SpecError as e:
            raise LaunchError(str(e)) from None
        _, chosen = self.env(spec, req)
        env = [f"{k}={shlex.quote(v)}" if v != "<redacted>" else f"{k}=${k}" for k, v in redact_env(chosen).items()]
        return " ".join(env + [shlex.join(argv)])

    def start(self, req: LaunchRequest) -> Server:
        op = opening(req, self.host, self.command)
        spec, port, argv = op.spec, op.port, op.plan
        env, chosen = self.env(spec, req)
        self.log_path = op.log_path
        for check in local_checks(req, hf_home()):  # as docker does: GPUs asked for, disk for a download
            check()
        try:
            with open(self.log_path, "ab") as log:
                # own session = own process group, so stop() reaches every worker the engine spawns
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True)
        except OSError as e:
            raise LaunchError(f"cannot start {spec.name}: {argv[0]}: {e.strerror}") from None
        base_url = f"http://{self.host}:{port}"
        adapter = op.adapter
        try:
            atexit.register(self.stop)
            ready_s = wait_ready(spec, base_url, adapter=adapter, model=self.served(spec, req), timeout_s=ready_timeout(req),
                                 exited=self._exited, tail=lambda: log_tail(self.log_path), poll_s=self.poll_s)
        except BaseException:  # KeyboardInterrupt included: never leave the server behind
            self.stop()
            raise
        return Server(base_url=base_url, engine=spec.name, adapter=adapter, time_to_ready_s=ready_s,
                      pid=self.proc.pid, info={
                          "launcher": self.name, "command": shlex.join(argv), "argv": argv,
                          "env": redact_env(chosen), "log": str(self.log_path), "port": port,
                          "served_model_name": self.served(spec, req), "spec": spec.source,
                          **self._cpu_info(spec)})

    def _cpu_info(self, spec: EngineSpec) -> dict:
        """run.json: the dtype servebench chose and why; slow CPU paths the server logged."""
        out: dict = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.gguf is not None:
            out["gguf"] = self.gguf
        if spec.cpu_dtype is not None:
            lines = slow_path_lines(self.log_path, spec.cpu_dtype.slow_path_log)
            if lines:
                out["slow_path"] = lines
        return out

    def _exited(self) -> str | None:
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            return None
        return f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        hurry: list[int] = []
        # a second Ctrl-C must not leave the server half-stopped: it ends the grace, not the stop
        with shielded(lambda sig: (hurry.append(sig), print(
                f"interrupt held: killing the server (pid {proc.pid}) now (no more grace)", file=sys.stderr, flush=True))):
            _stop_tree(proc, self.stop_timeout_s, hurry)
            self.proc = None  # only once all of it is gone: until then atexit still stops it
            atexit.unregister(self.stop)


def _stop_tree(proc: subprocess.Popen, grace_s: float, hurry: list[int]) -> None:
    """SIGTERM the engine's group and every group its descendants made (TGI starts its shards
    and router with process_group(0)), wait up to grace_s for all of them, then SIGKILL what is
    left. Descendants are remembered while the leader lives: once it exits they belong to init."""
    pgid = proc.pid  # session leader: its pid is the group id, valid while any member lives
    known = _descendants(proc.pid, {})
    for g in {pgid} | _groups(known):
        _signal_group(g, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not hurry:
        if proc.poll() is None:
            known = _descendants(proc.pid, known)
        if not _left(pgid, known):
            break
        time.sleep(0.05)
    if _left(pgid, known):
        for g in {pgid} | _groups(known):
            _signal_group(g, signal.SIGKILL)
        for p in known.values():
            try:
                p.kill()
            except psutil.Error:
                pass
        # SIGKILL is delivered at once but a member (a worker holding GPU memory) exits a moment
        # later; return only when all are gone, so the next launch finds the device free
        killed = time.monotonic() + KILL_WAIT_S
        while _left(pgid, known) and time.monotonic() < killed:
            time.sleep(0.02)
    proc.wait()


def _descendants(pid: int, known: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return known
    return known | {k.pid: k for k in kids if k.pid not in known}


def _groups(known: dict[int, psutil.Process]) -> set[int]:
    out = set()
    for p in known.values():
        try:
            out.add(os.getpgid(p.pid))
        except (ProcessLookupError, PermissionError):
            pass
    return out


def _alive(p: psutil.Process) -> bool:
    try:  # is_running() also checks the creation time: a reused pid is not ours
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _left(pgid: int, known: dict[int, psutil.Process]) -> bool:
    return _group_alive(pgid) or any(_alive(p) for p in known.values())


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies count for killpg; where no init reaps them (containers) they would never leave
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
