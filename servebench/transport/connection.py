"""One kept-alive HTTP/1.1 connection as an asyncio protocol: reads the response head, undoes
chunked framing and stores each read's raw body bytes with its receive stamp on the request's
record (parsing waits for the run's end: servebench.analysis.decode). The caps on head, line
and event sizes are enforced here, with one running byte count per read, so a server that
sends a 50 MB line fails that request instead of growing the client (docs/faults.md).
HttpTransport (http.py) pools these connections and sends on them."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import Any

from servebench.adapters.sse import MAX_EVENT, MAX_HEAD, MAX_LINE
from servebench.records import RequestRecord

_HEAD, _SIZE, _DATA, _DATA_END, _TRAILER, _LENGTH, _EOF, _IDLE = range(8)
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")  # a blank line closes an SSE event
_LINE_ENDS = (b"\n", b"\r")



class Conn(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    __slots__ = ("transport", "pool", "rec", "fut", "state", "buf", "need", "keep_alive", "closed", "used",
                 "line_n", "event_n", "line_end")

    def __init__(self, pool: Any) -> None:  # the HttpTransport that owns it: read_lag_ns, _release, _forget
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
            if self.state == _EOF and exc is None:  # a body that ends with the connection, cleanly
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
