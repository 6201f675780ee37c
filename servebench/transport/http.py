"""A minimal HTTP/1.1 streaming client on non-blocking sockets with kernel receive stamps.

Why not aiohttp/httpx: their request call stamps before the pool hands out a connection and
before the request is serialized, so connection set-up and event-loop queueing land in TTFT,
and they cost tens of microseconds per chunk. Here connections are opened and kept alive before
t0, the request is serialized before t0, `sent_ns` is taken immediately before the write, and
each read is stored as raw body bytes (chunked framing removed) with the time its bytes
arrived. Stream parsing happens after the run (servebench.analysis.decode).

Read stamps come from the kernel (SO_TIMESTAMPNS: the time each segment was queued on the
socket), not from when the event loop got round to the read. A loop that is busy (sending the
next requests of a closed loop just as other streams' last tokens arrive, a progress-bar
refresh, a telemetry thread holding the GIL, a neighbour on the core) used to stamp every
read that waited behind it late by as long (docs/performance.md, "Stream ends"). recvmsg
reports the stamp of the last segment it consumed, so a read is never stamped before its bytes
arrived; events that arrived in separate segments but are read together share the later
stamp, as before. https (TLS in user space) and hosts without the option stamp on read.
"""

from __future__ import annotations

import asyncio
import socket
from array import array
import ssl
from time import perf_counter_ns
from urllib.parse import urlsplit

from servebench import __version__
from servebench.adapters.base import Request
from servebench.records import RequestRecord
from servebench.transport.base import Transport
from servebench.transport.connection import Conn
from servebench.transport.stamped import SO_TIMESTAMPNS, SockIO

class TransportError(RuntimeError):
    pass


class HttpTransport(Transport):
    """Keep-alive connection pool to one origin. `prepare` before t0; `send` during the load."""

    name = "http"

    def __init__(self, base_url: str, *, timeout_s: float = 600.0, api_key: str | None = None) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise TransportError(f"endpoint must be an http(s) URL, got {base_url!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if u.scheme == "https" else None
        self.prefix = u.path.rstrip("/")
        self.host_header = u.netloc
        self.timeout_s = timeout_s
        self.api_key = api_key
        self._idle: list[Conn] = []
        self._all: set[Conn] = set()
        self.connect_ns: list[int] = []  # set-up time of every connection opened
        self._addr: tuple | None = None  # resolved once
        self.read_lag_ns = array("q")  # per kernel-stamped read: read time - receive stamp

    # -- before t0
    def encode(self, req: Request, request_id: int | str | None = None) -> bytes:
        """Serialize one request to wire bytes (done before t0, never in the hot path)."""
        lines = [
            f"{req.method} {self.prefix}{req.path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"User-Agent: servebench/{__version__}",
            "Accept: text/event-stream, application/json",
            f"Content-Length: {len(req.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in req.headers]
        if self.api_key:
            lines.append(f"Authorization: Bearer {self.api_key}")
        if request_id is not None:
            lines.append(f"X-Request-Id: {request_id}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body

    async def prepare(self, n: int, parallel: int = 64) -> None:
        """Open `n` keep-alive connections now, so set-up never lands inside a measurement."""
        sem = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with sem:
                self._idle.append(await self._open())

        missing = max(0, n - len(self._idle))
        await asyncio.gather(*(one() for _ in range(missing)))

    async def _open(self) -> Conn:
        loop = asyncio.get_running_loop()
        t = perf_counter_ns()
        try:
            if self.ssl is not None or SO_TIMESTAMPNS is None:
                _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port, ssl=self.ssl)
            else:
                conn = await self._open_stamped(loop)
        except OSError as e:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        self.connect_ns.append(perf_counter_ns() - t)
        self._all.add(conn)
        return conn

    async def _open_stamped(self, loop: asyncio.AbstractEventLoop) -> Conn:
        if self._addr is not None:
            sock = await self._connect(loop, *self._addr)
        else:  # every address in turn, as create_connection does (localhost may be ::1 first)
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            for i, info in enumerate(infos):
                try:
                    sock = await self._connect(loop, info[0], info[4])
                    self._addr = info[0], info[4]
                    break
                except OSError:
                    if i == len(infos) - 1:
                        raise
        conn = Conn(self)
        conn.connection_made(SockIO(loop, sock, conn))
        return conn

    @staticmethod
    async def _connect(loop: asyncio.AbstractEventLoop, family: int, addr: tuple) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            await loop.sock_connect(sock, addr)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- during the load
    async def send(self, wire: bytes, rec: RequestRecord) -> None:
        """Send one prepared request and wait until its response ends; never raises for
        server or network faults (they go to rec.error)."""
        for attempt in (0, 1):
            conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                t = perf_counter_ns()
                try:
                    conn = await self._open()
                except TransportError as e:
                    rec.error, rec.end_ns = str(e), perf_counter_ns()
                    return
                rec.connect_ns += perf_counter_ns() - t
            fut = asyncio.get_running_loop().create_future()
            conn.begin(rec, fut)
            rec.sent_ns = perf_counter_ns()
            conn.transport.write(wire)  # type: ignore[union-attr]
            try:
                await _response(fut, self.timeout_s)
            # the timeout or cancel may land in the loop pass where the response ended: the
            # connection is then back in the pool, perhaps carrying the next request, not ours
            except asyncio.TimeoutError:
                if conn.rec is rec:
                    conn.fut = None
                    conn._finish(perf_counter_ns(), f"timeout: no complete response after {self.timeout_s:g}s")
                return
            except asyncio.CancelledError:
                if conn.rec is rec:
                    conn._finish(perf_counter_ns(), "cancelled")
                raise
            # A kept-alive connection the server closed while idle fails before any byte
            # arrives; the request never reached the engine, so it is safe to resend once.
            if reused and attempt == 0 and rec.status == 0 and not rec.first_byte_ns and rec.error:
                rec.error, rec.end_ns, rec.chunks = None, 0, []
                continue
            return

    def _release(self, conn: Conn) -> None:
        if not conn.closed:
            self._idle.append(conn)

    def _forget(self, conn: Conn) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def close(self) -> None:
        for c in list(self._all):
            c.closed = True
            if c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)


async def _response(fut: asyncio.Future, timeout_s: float | None) -> None:
    """Wait for a response's end. Not asyncio.wait_for: on Python 3.11 it swallows a
    cancellation that arrives in the loop iteration where the response ends, so a Ctrl-C (or a
    Ray task cancel) in that instant was lost and the load ran on to its end."""
    if not timeout_s:
        await fut
        return
    async with asyncio.timeout(timeout_s):
        await fut
