"""The emulator's HTTP/1.1 side: keep-alive, chunked responses, one request at a time per
connection (a pipelined request waits in the buffer until the response is done).

Sockets are driven directly (emulator.sock) rather than through asyncio transports, so that a
request's arrival is the kernel's receive timestamp of its last bytes, not the moment this
loop got round to reading them.

Run as a process: `python -m servebench.emulator.server '<EmulatorConfig JSON>'`; it prints one
JSON line {"url", "port", "pid", "log"} when it listens and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
from time import perf_counter_ns

from servebench.emulator.core import Emulator, EmulatorConfig, Stream
from servebench.emulator.formats import BadRequest, Gen, now_created
from servebench.emulator.sock import Listener, SockConn

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 422: "Unprocessable Entity", 431: "Request Header Fields Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


class Conn(SockConn):
    __slots__ = ("emu", "buf", "stream", "keep", "closed", "rid")

    def __init__(self, emu: Emulator, loop, sock, owner) -> None:
        self.emu = emu
        self.buf = bytearray()
        self.stream: Stream | None = None  # the response in progress, if any
        self.keep = True
        self.closed = False  # no more requests are read (closing, or gone)
        self.rid = ""
        super().__init__(loop, sock, owner)

    def on_lost(self) -> None:
        self.closed = True
        if self.stream is not None:
            self.emu.client_gone(self.stream)
            self.stream = None

    def on_data(self, data: bytes, arrival_ns: int) -> None:
        self.buf += data
        if self.stream is None:
            self._next(arrival_ns)

    # -- requests
    def _next(self, now: int) -> None:
        while self.stream is None and not self.closed and self.buf:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._reply(431, b"", close=True)
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._reply(400, b'{"error":"malformed request line"}', close=True)
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if "transfer-encoding" in headers:
                self._reply(501, b'{"error":"chunked request bodies are not supported"}', close=True)
                return
            try:
                n = int(headers.get("content-length", "0"))
                if not 0 <= n <= _MAX_BODY:
                    raise ValueError
            except ValueError:
                self._reply(400, b'{"error":"bad content-length"}', close=True)
                return
            if len(buf) < end + 4 + n:
                return
            body = bytes(buf[end + 4 : end + 4 + n])
            del buf[: end + 4 + n]
            conn_hdr = headers.get("connection", "").lower()
            self.keep = conn_hdr != "close" if version == "HTTP/1.1" else conn_hdr == "keep-alive"
            self._dispatch(method, target.split("?", 1)[0], headers, body, now)

    def _dispatch(self, method: str, path: str, headers: dict, body: bytes, now: int) -> None:
        emu = self.emu
        if method == "GET":
            if path in ("/health", "/healthz"):
                return self._reply(200, b"", ctype=None)
            if path == "/v1/models":
                d = {"object": "list", "data": [{"id": emu.cfg.model, "object": "model", "created": now_created(),
                                                 "owned_by": "servebench-emulator"}]}
                return self._reply(200, json.dumps(d).encode())
            if path == "/metrics":
                return self._reply(200, emu.metrics(), ctype="text/plain; version=0.0.4")
            if path == "/version":
                return self._reply(200, b'{"version":"emulator"}')
            if path == "/info":
                return self._reply(200, json.dumps({"model_id": emu.cfg.model, "version": "emulator",
                                                    "max_concurrent_requests": emu.cfg.max_concurrent_requests or 1 << 16}).encode())
        if method == "POST" and path in ("/reset_prefix_cache", "/flush_cache"):
            emu.cache_resets += 1  # nothing is cached here; counted so a sweep's resets can be checked
            return self._reply(200, b"")
        fmt = emu.fmt
        mode = fmt.routes.get(path)
        if mode is None:
            return self._reply(404, fmt.error(404, f"no route {method} {path}"))
        if method != "POST":
            return self._reply(405, fmt.error(405, f"{path} takes POST"))
        seq = emu.next_seq()
        self.rid = rid = headers.get("x-request-id") or str(seq)
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise BadRequest("body must be a JSON object")
            kw = fmt.parse(path, req, emu.count)
        except (ValueError, BadRequest) as e:  # json.JSONDecodeError is a ValueError
            status = 422 if emu.cfg.format in ("tgi", "lightllm") else 400  # TGI's validation status
            return self._reply(status, fmt.error(status, str(e)))
        stream = kw.pop("stream", mode is True) if mode == "body" else mode
        gen = Gen(rid=rid, path=path, stream=stream, created=now_created(), **kw)
        if "model" not in kw:
            gen.model = emu.cfg.model
        fmt.prepare(gen)
        self.stream = emu.admit(self, gen, seq, now)

    def _reply(self, status: int, body: bytes, ctype: str | None = "application/json",
               headers: list[tuple[str, str]] = (), close: bool = False) -> None:
        keep = self.keep and not close
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"content-length: {len(body)}"]
        if ctype:
            head.append(f"content-type: {ctype}")
        if self.rid:
            head.append(f"x-request-id: {self.rid}")
        head += [f"{k}: {v}" for k, v in headers]
        if not keep:
            head.append("connection: close")
        self.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body)
        self.rid = ""
        if not keep:
            self.closed = True
            self.close()

    # -- called by the Emulator's clock
    def write(self, data: bytes) -> None:
        self.send(data)

    def begin_stream(self) -> None:
        # headers go out on arrival, as the engines do; tokens follow on their deadlines
        self.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     b"cache-control: no-cache\r\nx-request-id: %b\r\ntransfer-encoding: chunked\r\n%b\r\n"
                     % (self.rid.encode("latin-1", "replace"), b"" if self.keep else b"connection: close\r\n"))

    def send_error(self, status: int, msg: str) -> None:
        self._reply(status, self.emu.fmt.error(status, msg))

    def send_whole(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        self._reply(200, body, headers=headers)

    def end_stream(self) -> None:
        self.stream = None
        self.rid = ""
        if self.closed:
            return
        if not self.keep:
            self.closed = True
            self.close()
        elif self.buf:
            self._next(perf_counter_ns())

    def abort_stream(self) -> None:
        """Mid-stream failure: drop the connection without the terminating chunk."""
        self.stream = None
        self.closed = True
        self.close()

    def reset_stream(self) -> None:
        """Fault `reset`: a TCP RST (SO_LINGER 0), as a crashed proxy or a middlebox sends."""
        self.stream = None
        self.closed = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.abort()


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


async def start(cfg: EmulatorConfig) -> tuple[Emulator, Listener, int]:
    loop = asyncio.get_running_loop()
    emu = Emulator(cfg, loop)
    try:
        srv = Listener(loop, cfg.host, cfg.port, lambda lp, sock, owner: Conn(emu, lp, sock, owner))
    except BaseException:
        emu.close()
        raise
    return emu, srv, srv.port


async def serve(cfg: EmulatorConfig, ready=None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT in the main thread). `ready(info)` is called
    once listening, with {"url", "port", "pid", "log"}."""
    emu, srv, port = await start(cfg)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if hasattr(signal, "SIGTERM") and _main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if _main_thread():  # fault kill-after: die as a killed server does, sockets and all
        emu.on_kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    else:  # in a thread (tests) the process must live: drop every connection and stop serving
        emu.on_kill = lambda: (srv.close(), stop.set())
    info = {"url": f"http://{cfg.host}:{port}", "port": port, "pid": os.getpid(), "log": cfg.log}
    if ready:
        ready(info)
    try:
        await stop.wait()
    finally:
        emu.close()  # live streams are logged as "shutdown" before their sockets go
        srv.close()


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def run(cfg: EmulatorConfig, ready=None) -> None:
    loop = new_loop(cfg.loop)
    try:
        loop.run_until_complete(serve(cfg, ready))
    finally:
        loop.close()


def _print_ready(info: dict) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    run(EmulatorConfig.model_validate_json(sys.argv[1]), _print_ready)
