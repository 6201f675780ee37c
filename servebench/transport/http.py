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
from servebench.adapters.sse import MAX_EVENT, MAX_HEAD, MAX_LINE
from servebench.records import RequestRecord
from servebench.transport.base import Transport
from servebench.transport.stamped import SO_TIMESTAMPNS, SockIO

_HEAD, _SIZE, _DATA, _DATA_END, _TRAILER, _LENGTH, _EOF, _IDLE = range(8)
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")  # a blank line closes an SSE event
_LINE_ENDS = (b"\n", b"\r")


class TransportError(RuntimeError):
    pass


class _Conn(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    __slots__ = ("transport", "pool", "rec", "fut", "state", "buf", "need", "keep_alive", "closed", "used",
                 "line_n", "event_n", "line_end")

    def __init__(self, pool: "HttpTransport") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.rec: RequestRecord | None = None
        self.fut: asyncio.Future | None = None
        self.state = _IDLE
        self.buf = b""
        self.need = 0
        self.keep_alive = True
        self.closed = False
        self.used = False
        self.line_n = self.event_n = 0  # body bytes since the last line end / blank line (the caps)
        self.line_end = True  # the last body byte ended a line

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:  # TLS: asyncio's transport, stamped on read
        self.on_data(data, perf_counter_ns())

    def on_data(self, data: bytes, now: int, read_ns: int = 0) -> None:
        """`now`: when the bytes arrived (kernel stamp, or the read time); `read_ns`: when the
        loop read them, if that differs."""
        rec = self.rec
        if read_ns and self.state != _HEAD:
            # how long body bytes waited for the loop; response heads are left out: in a burst
            # they arrive while the loop is still sending, and carry no token
            self.pool.read_lag_ns.append(read_ns - now)
        if rec is None:  # bytes with no request in flight: the server broke framing
            self._abort()
            return
        if not rec.first_byte_ns:
            rec.first_byte_ns = now
        if self.state == _HEAD:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0 and len(data) <= MAX_HEAD:
                self.buf = data
                return
            if end < 0 or end > MAX_HEAD:
                self._finish(now, f"response head over {MAX_HEAD >> 10} KiB (servebench's cap)")
                return
            self.buf = b""
            try:
                self._parse_head(data[:end])
            except (ValueError, IndexError):
                self._finish(now, f"malformed HTTP response head: {data[:60]!r}")
                return
            data = data[end + 4 :]
            if self.state == _LENGTH and self.need == 0:
                self._finish(now)
                return
            if not data:
                return
        if self.state == _LENGTH:
            ok = self._body(data[: self.need], now, rec)
            self.need -= len(data)
            if ok and self.need <= 0:
                self._finish(now)
        elif self.state == _EOF:
            self._body(data, now, rec)
        else:
            self._chunked(data, now, rec)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.rec is not None:
            if self.state == _EOF:
                self._finish(perf_counter_ns())
            else:
                why = f": {exc}" if exc else ""
                self._finish(perf_counter_ns(), f"connection closed before the response ended{why}")

    # -- framing
    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if not status_line[0].startswith(b"HTTP/"):
            raise ValueError("not HTTP")
        status = int(status_line[1])
        if not 100 <= status <= 999:  # the records hold it as int32; anything else is not HTTP
            raise ValueError("status out of range")
        self.rec.status = status  # type: ignore[union-attr]
        length = None
        chunked = False
        self.keep_alive = status_line[0] != b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
                if length < 0:
                    raise ValueError("negative Content-Length")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                self.keep_alive = v == b"keep-alive" or (v != b"close" and self.keep_alive)
        if chunked:
            self.state, self.need = _SIZE, 0
        elif length is not None:
            self.state, self.need = _LENGTH, length
        else:
            self.state, self.keep_alive = _EOF, False

    def _chunked(self, data: bytes, now: int, rec: RequestRecord) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos, n = 0, len(data)
        out: list[bytes] = []
        while pos < n:
            st = self.state
            if st == _DATA:
                take = min(self.need, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.need -= take
                if self.need == 0:
                    self.state = _DATA_END
            elif st == _DATA_END or st == _SIZE or st == _TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.buf = data[pos:]
                    if len(self.buf) > MAX_HEAD:
                        if self._emit(out, now, rec):
                            self._finish(now, f"chunked framing line over {MAX_HEAD >> 10} KiB (servebench's cap)")
                        return
                    break
                line = data[pos:eol]
                pos = eol + 2
                if st == _DATA_END:
                    self.state = _SIZE  # the CRLF after a chunk's data
                elif st == _SIZE:
                    try:
                        size = int(line.split(b";", 1)[0], 16)
                    except ValueError:
                        if self._emit(out, now, rec):
                            self._finish(now, f"malformed chunk size line: {line[:40]!r}")
                        return
                    if size == 0:
                        self.state = _TRAILER
                    else:
                        self.state, self.need = _DATA, size
                elif not line:  # empty line ends the trailers: response complete
                    if self._emit(out, now, rec):
                        self._finish(now)
                    return
        self._emit(out, now, rec)

    def _emit(self, out: list[bytes], now: int, rec: RequestRecord) -> bool:
        return self._body(out[0] if len(out) == 1 else b"".join(out), now, rec) if out else True

    def _body(self, piece: bytes, now: int, rec: RequestRecord) -> bool:
        """Keep one piece of body; False (the request failed, the connection dropped) when it
        takes a line or an event past the caps. Per read: one endswith in the usual case (a
        read holding whole events); only a read that ends mid-event is searched."""
        rec.chunks.append((now, piece))
        if piece.endswith(_EVENT_ENDS):
            if self.event_n:  # 0 only after this same path (or begin): the rest is as it should be
                self.line_n = self.event_n = 0
                self.line_end = True
            return True
        n = len(piece)
        i = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
        self.line_n = self.line_n + n if i < 0 else n - i - 1
        j = max(piece.rfind(b"\n\n"), piece.rfind(b"\r\n\r\n"), piece.rfind(b"\r\r"))
        if j >= 0:
            self.event_n = n - j
        elif self.line_end and piece.startswith(_LINE_ENDS):  # the blank line began in the last read
            self.event_n = n
        else:
            self.event_n += n
        self.line_end = piece.endswith(_LINE_ENDS)
        if self.line_n <= MAX_LINE and self.event_n <= MAX_EVENT:
            return True
        what = f"line over {MAX_LINE >> 20}" if self.line_n > MAX_LINE else f"event over {MAX_EVENT >> 20}"
        self._finish(now, f"stream {what} MiB (servebench's cap): the rest of the response was not read")
        return False

    # -- request lifecycle
    def begin(self, rec: RequestRecord, fut: asyncio.Future) -> None:
        self.rec, self.fut, self.state, self.buf, self.used = rec, fut, _HEAD, b"", True
        self.line_n = self.event_n = 0
        self.line_end = True

    def _finish(self, now: int, error: str | None = None) -> None:
        rec, fut = self.rec, self.fut
        self.rec = self.fut = None
        reuse = error is None and self.keep_alive and not self.closed
        self.state = _IDLE
        if rec is not None:
            rec.end_ns = now
            if error is not None and rec.error is None:
                rec.error = error
        if reuse:
            self.pool._release(self)
        else:
            self._abort()
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.pool._forget(self)


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
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
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

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        t = perf_counter_ns()
        try:
            if self.ssl is not None or SO_TIMESTAMPNS is None:
                _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port, ssl=self.ssl)
            else:
                conn = await self._open_stamped(loop)
        except OSError as e:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        self.connect_ns.append(perf_counter_ns() - t)
        self._all.add(conn)
        return conn

    async def _open_stamped(self, loop: asyncio.AbstractEventLoop) -> _Conn:
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
        conn = _Conn(self)
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
            except asyncio.TimeoutError:
                conn.fut = None
                conn._finish(perf_counter_ns(), f"timeout: no complete response after {self.timeout_s:g}s")
                return
            except asyncio.CancelledError:
                conn._finish(perf_counter_ns(), "cancelled")
                raise
            # A kept-alive connection the server closed while idle fails before any byte
            # arrives; the request never reached the engine, so it is safe to resend once.
            if reused and attempt == 0 and rec.status == 0 and not rec.first_byte_ns and rec.error:
                rec.error, rec.end_ns, rec.chunks = None, 0, []
                continue
            return

    def _release(self, conn: _Conn) -> None:
        if not conn.closed:
            self._idle.append(conn)

    def _forget(self, conn: _Conn) -> None:
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
