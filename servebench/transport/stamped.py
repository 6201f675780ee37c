"""Raw non-blocking sockets whose reads carry the kernel's receive stamp (SO_TIMESTAMPNS).

The HTTP client's connections use this instead of an asyncio transport, which hands over bytes
but not when they arrived: a read stamped when the loop gets round to it is late by however
long the loop was busy (docs/performance.md, "Stream ends under a closed loop").
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from time import perf_counter_ns, time_ns

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TS = struct.Struct("qq")  # struct timespec (64-bit)
_ANC = socket.CMSG_SPACE(_TS.size) if hasattr(socket, "CMSG_SPACE") else 0
_READ = 256 * 1024
_offset = [time_ns() - perf_counter_ns()]  # CLOCK_REALTIME - CLOCK_MONOTONIC, last tight reading


def _kernel_stamp(anc: list, now: int) -> int:
    """The kernel's receive time (CLOCK_REALTIME) as perf_counter_ns, else `now`."""
    for level, kind, data in anc:
        if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(data) >= _TS.size:
            sec, nsec = _TS.unpack_from(data)
            a = perf_counter_ns()
            r = time_ns()
            b = perf_counter_ns()
            if b - a < 20_000:  # a preemption between the reads would shift the conversion
                _offset[0] = r - (a + b) // 2
            t = sec * 1_000_000_000 + nsec - _offset[0]
            # a wall-clock step, or a stamp that the conversion puts after the read: the read time
            return t if now - 10_000_000_000 < t <= now else now
    return now


class SockIO:
    """The transport half of a connection on a raw non-blocking socket: reads with their
    kernel receive stamp go to `conn.on_data(data, ns)`, EOF/errors to `conn.connection_lost`."""

    __slots__ = ("loop", "sock", "fd", "conn", "wbuf", "gone")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, conn) -> None:
        self.loop, self.sock, self.fd, self.conn = loop, sock, sock.fileno(), conn
        self.wbuf = bytearray()
        self.gone = False
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(_READ, _ANC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e)
            return
        now = perf_counter_ns()
        if not data:
            self._lost(None)
            return
        self.conn.on_data(data, _kernel_stamp(anc, now), now) if anc else self.conn.on_data(data, now)

    def write(self, data: bytes) -> None:
        if self.gone:
            return
        if not self.wbuf:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self.loop.call_soon(self._lost, e)
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
        except OSError as e:
            self._lost(e)
            return
        del self.wbuf[:n]
        if not self.wbuf:
            self.loop.remove_writer(self.fd)

    def close(self) -> None:
        if not self.gone:
            self.loop.call_soon(self._lost, None)
            self._teardown()

    def _teardown(self) -> None:
        self.gone = True
        self.loop.remove_reader(self.fd)
        if self.wbuf:
            self.loop.remove_writer(self.fd)
        self.sock.close()

    def _lost(self, exc: BaseException | None) -> None:
        if not self.gone:
            self._teardown()
        if not self.conn.closed or self.conn.rec is not None:
            self.conn.connection_lost(exc)
