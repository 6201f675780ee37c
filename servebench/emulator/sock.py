"""Non-blocking sockets on the event loop, with kernel receive timestamps.

Why not asyncio transports: a transport hands over bytes, not the time they arrived. The
emulator's arrival stamp is the ground truth every accuracy number is measured against, so it
must not depend on how busy the emulator's own loop is (500 streams due at once keep it busy
for milliseconds). With SO_TIMESTAMPNS the kernel stamps each received segment as it is
queued; on loopback that is inside the client's send() call. recvmsg returns that stamp
(CLOCK_REALTIME), converted here to perf_counter_ns (CLOCK_MONOTONIC) at read time.
Where the option is missing (not Linux) the stamp is the read time instead.

servebench/transport/stamped.py does the same for the client, deliberately not shared: this is
the truth the client is measured against, and a conversion bug common to both would cancel out
of every accuracy number instead of showing in it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from time import perf_counter_ns, time_ns

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TS = struct.Struct("qq")  # struct timespec on 64-bit Linux
_ANC = socket.CMSG_SPACE(_TS.size) if hasattr(socket, "CMSG_SPACE") else 0
_READ = 256 * 1024


_offset = [time_ns() - perf_counter_ns()]  # CLOCK_REALTIME - CLOCK_MONOTONIC, last good reading


def _realtime_offset() -> int:
    # Bracketed: a preemption between the two clock reads would shift every stamp converted
    # with it by as long as the preemption lasted, so a reading is kept only when tight.
    for _ in range(3):
        a = perf_counter_ns()
        r = time_ns()
        b = perf_counter_ns()
        if b - a < 20_000:
            _offset[0] = r - (a + b) // 2
            break
    return _offset[0]


def _stamp(anc: list) -> int:
    now = perf_counter_ns()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TS.size:
            sec, nsec = _TS.unpack_from(data)
            t = sec * 1_000_000_000 + nsec - _realtime_offset()
            if now - 10_000_000_000 < t <= now:  # a wall-clock step mid-read: trust the read time
                return t
    return now


class SockConn:
    """One accepted connection: `on_data(data, arrival_ns)` / `on_lost()` for subclasses,
    `send` (buffers what the socket does not take), `close` (after pending bytes), `abort`."""

    __slots__ = ("loop", "sock", "fd", "wbuf", "closing", "gone", "owner")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, owner: set) -> None:
        self.loop, self.sock, self.fd, self.owner = loop, sock, sock.fileno(), owner
        self.wbuf = bytearray()
        self.closing = self.gone = False
        owner.add(self)
        loop.add_reader(self.fd, self._readable)

    def on_data(self, data: bytes, arrival_ns: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_lost(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _readable(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(_READ, _ANC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if not data:  # the peer closed
            self.abort()
            return
        self.on_data(data, _stamp(anc))

    def send(self, data: bytes) -> None:
        if self.gone:
            return
        if not self.wbuf:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.abort()
                return
            if n == len(data):
                return
            data = data[n:]
            self.loop.add_writer(self.fd, self._writable)
        self.wbuf += data

    def _writable(self) -> None:
        try:
            n = self.sock.send(self.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        del self.wbuf[:n]
        if not self.wbuf:
            self.loop.remove_writer(self.fd)
            if self.closing:
                self.abort()

    def close(self) -> None:
        """Close once everything sent so far is written."""
        if self.wbuf:
            self.closing = True
            self.loop.remove_reader(self.fd)
        else:
            self.abort()

    def abort(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.loop.remove_reader(self.fd)
        if self.wbuf:
            self.loop.remove_writer(self.fd)
        self.owner.discard(self)
        self.sock.close()
        self.on_lost()


class Listener:
    """Accepts connections and hands each (non-blocking, timestamping) socket to `factory`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, factory) -> None:
        self.loop, self.factory = loop, factory
        self.conns: set[SockConn] = set()
        self.sock = socket.create_server((host, port), backlog=4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(512):  # a burst of connects is taken in one wake-up
            try:
                s, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors: leave it in the backlog for now
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if SO_TIMESTAMPNS is not None:
                try:
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:
                    pass
            self.factory(self.loop, s, self.conns)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for c in list(self.conns):
            c.abort()
