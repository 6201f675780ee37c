"""The raw HTTP/1.1 client against a scripted server that writes exact bytes at set times."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from servebench.adapters.base import Request
from servebench.records import RequestRecord
from servebench.transport.http import HttpTransport, TransportError


class Scripted:
    """A server whose every response is a list of (delay_s, bytes) writes."""

    def __init__(self, script, close_after=False, reset_after=False):
        self.script = script
        self.close_after = close_after
        self.reset_after = reset_after  # a TCP reset (RST) instead of a close (FIN)
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                for delay, data in self.script:
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
                if self.reset_after:
                    await asyncio.sleep(0.05)  # the body reaches the client before the reset
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
                if self.close_after or self.reset_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionResetError):
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


REQ = Request("POST", "/v1/completions", b'{"prompt":"hi"}')


def run(coro):
    return asyncio.run(coro)


def send_one(server: Scripted, **transport) -> RequestRecord:
    """One request through a fresh transport against `server`; its record."""

    async def go():
        async with server as srv:
            tr = HttpTransport(srv.url, **transport)
            rec = RequestRecord(index=0)
            await tr.send(tr.encode(REQ), rec)
            await tr.close()
            return rec

    return run(go())


def test_chunked_stream_records_body_bytes_per_read_with_framing_removed():
    events = [b'data: {"a":1}\n\n', b'data: {"a":2}\n\n', b"data: [DONE]\n\n"]
    script = [(0, HEAD_CHUNKED)] + [(0.02, chunk(e)) for e in events] + [(0.02, b"0\r\n\r\n")]

    async def go():
        async with Scripted(script) as srv:
            tr = HttpTransport(srv.url)
            await tr.prepare(1)
            rec = RequestRecord(index=0)
            await tr.send(tr.encode(REQ, 7), rec)
            await tr.close()
            return srv, rec

    srv, rec = run(go())
    assert rec.ok and rec.status == 200 and rec.error is None
    assert b"".join(b for _, b in rec.chunks) == b"".join(events)
    assert len(rec.chunks) == 3  # one read per event: each stamped on its own
    ts = [t for t, _ in rec.chunks]
    assert rec.sent_ns < rec.first_byte_ns <= ts[0] < ts[1] < ts[2] <= rec.end_ns
    assert ts[1] - ts[0] >= 15_000_000  # 20 ms apart on the server -> apart here too
    assert b"X-Request-Id: 7\r\n" in srv.requests[0] and srv.requests[0].endswith(b'{"prompt":"hi"}')


def test_chunk_framing_split_at_every_byte_boundary():
    body = b'data: {"t":"\xc3\xa9"}\n\n'
    wire = HEAD_CHUNKED + chunk(body) + chunk(body) + b"0\r\n\r\n"
    # one byte per write, with a pause so each arrives as its own read
    script = [(0.001, wire[i : i + 1]) for i in range(len(wire))]

    rec = send_one(Scripted(script))
    assert rec.ok
    assert b"".join(b for _, b in rec.chunks) == body * 2


def test_keep_alive_reuses_prepared_connections_and_send_stamp_excludes_connect():
    script = [(0, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]

    async def go():
        async with Scripted(script) as srv:
            tr = HttpTransport(srv.url)
            await tr.prepare(2)
            recs = [RequestRecord(index=i) for i in range(6)]
            for r in recs:
                await tr.send(tr.encode(REQ), r)
            await tr.close()
            return srv, tr, recs

    srv, tr, recs = run(go())
    assert all(r.ok for r in recs)
    assert [b"".join(b for _, b in r.chunks) for r in recs] == [b"ok"] * 6
    assert srv.connections == 2 and len(tr.connect_ns) == 2
    assert all(r.connect_ns == 0 for r in recs)  # no request paid for a connection


def test_connection_opened_during_load_is_recorded_apart():
    script = [(0, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]

    rec = send_one(Scripted(script))
    assert rec.ok and rec.connect_ns > 0 and rec.sent_ns > 0


def test_server_closing_idle_keepalive_connection_is_retried_once():
    script = [(0, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]

    async def go():
        async with Scripted(script, close_after=True) as srv:
            tr = HttpTransport(srv.url)
            a, b = RequestRecord(index=0), RequestRecord(index=1)
            await tr.send(tr.encode(REQ), a)
            await asyncio.sleep(0.05)
            await tr.send(tr.encode(REQ), b)
            await tr.close()
            return a, b

    a, b = run(go())
    assert a.ok and b.ok and b.chunks[0][1] == b"ok"


def test_error_status_body_is_kept_and_request_not_ok():
    body = b'{"error":"Input validation error","error_type":"validation"}'
    script = [(0, b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))]

    rec = send_one(Scripted(script))
    assert rec.status == 422 and not rec.ok and rec.chunks[0][1] == body


def test_stream_cut_mid_response_is_an_error():
    script = [(0, HEAD_CHUNKED + chunk(b"data: {}\n\n"))]

    rec = send_one(Scripted(script, close_after=True))
    assert not rec.ok and "closed before the response ended" in rec.error and rec.end_ns > 0


@pytest.mark.parametrize("reset", [False, True])
def test_a_body_that_ends_with_the_connection_is_whole_on_a_close_and_cut_on_a_reset(reset):
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"

    rec = send_one(Scripted([(0, head + b"data: {}\n\n")], close_after=not reset, reset_after=reset))
    assert [c for _, c in rec.chunks] == [b"data: {}\n\n"] and rec.end_ns > 0
    assert (rec.error is not None and "closed before the response ended" in rec.error) if reset else rec.ok


def test_a_timeout_in_the_pass_where_the_response_ended_leaves_the_next_request_alone():
    # the response (at 100 ms) and its 400 ms deadline fall due in one loop pass (the loop was
    # blocked for 500 ms); the connection went back to the pool and the next request took it
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    resp = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 14\r\n\r\ndata: [DONE]\n\n"

    def serve():
        c, _ = lsock.accept()
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            _, _, buf = buf.partition(b"\r\n\r\n")
            buf = buf[2:]  # the body: "{}"
            time.sleep(0.10)
            c.sendall(resp)

    threading.Thread(target=serve, daemon=True).start()
    wire = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"

    async def go():
        tr = HttpTransport("http://127.0.0.1:%d" % lsock.getsockname()[1], timeout_s=0.4)
        await tr.prepare(1)
        go_b = asyncio.Event()
        a, b = RequestRecord(index=0), RequestRecord(index=1)

        async def second():
            await go_b.wait()
            await tr.send(wire, b)

        async def busy():
            await asyncio.sleep(0.05)
            time.sleep(0.5)  # a's bytes and a's deadline are both due now
            await asyncio.sleep(0)
            go_b.set()

        await asyncio.gather(tr.send(wire, a), second(), busy())
        await tr.close()
        return a, b

    a, b = run(go())
    lsock.close()
    assert a.ok and b.ok and b.error is None, b.error  # b was failed with a's timeout


def test_timeout_marks_request_and_does_not_hang():
    script = [(0, HEAD_CHUNKED), (5, b"0\r\n\r\n")]

    rec = send_one(Scripted(script), timeout_s=0.1)
    assert not rec.ok and rec.error.startswith("timeout")


def test_unreachable_endpoint_is_a_one_line_error():
    async def go():
        tr = HttpTransport("http://127.0.0.1:9")
        with pytest.raises(TransportError, match="cannot connect"):
            await tr.prepare(1)
        rec = RequestRecord(index=0)
        await tr.send(tr.encode(REQ), rec)
        return rec

    rec = run(go())
    assert rec.error.startswith("cannot connect") and "\n" not in rec.error


def test_bad_url_rejected():
    with pytest.raises(TransportError):
        HttpTransport("localhost:8000")


def test_a_read_is_stamped_when_its_bytes_arrived_not_when_a_busy_loop_got_to_it():
    """The client's loop is blocked (as by a burst of sends, a progress-bar refresh or a
    neighbour on its core) while the server writes the first token; the read must still carry
    the time the token arrived, as the emulator's write log shows, not the time it was read."""
    import time
    from time import perf_counter_ns

    from servebench.adapters import ADAPTERS
    from servebench.analysis.decode import decode_records
    from servebench.emulator import start_emulator

    ad = ADAPTERS["openai-completions"]
    with start_emulator("openai", ttft_ms=30, itl_ms=300, flush_s=0.05) as emu:
        async def go():
            tr = HttpTransport(emu.url)
            await tr.prepare(1)
            rec = RequestRecord(index=0, output_tokens=2)
            task = asyncio.ensure_future(tr.send(tr.encode(ad.build("hi", 2, model="m"), 0), rec))
            while not rec.first_byte_ns:  # the response head, sent on arrival
                await asyncio.sleep(0)
            time.sleep(0.1)  # the loop is stuck well past the first token's write (~30 ms)
            woke = perf_counter_ns()
            await task
            await tr.close()
            return rec, woke, list(tr.read_lag_ns)

        rec, woke, lags = run(go())
        emu.stop()
        log = emu.records()
    decode_records(ad, [rec])
    assert rec.ok and len(rec.token_ns) == 2
    write = log[0]["token_ns"][0]
    assert woke - write > 40_000_000  # the token really waited in the socket for the loop
    assert 0 <= rec.token_ns[0] - write < 1_000_000  # and is stamped at its arrival anyway
    assert max(lags) > 40_000_000  # the wait itself is recorded, as read lag (client verdict)


def test_a_cancel_in_the_instant_a_response_ends_is_not_swallowed():
    """Ctrl-C (asyncio.Runner cancels the load) landing in the loop iteration where a response
    ends must still stop the load: asyncio.wait_for on Python 3.11 returned the result instead,
    and a Ray sweep's cancelled cells ran on to their end."""
    from servebench.transport.http import _response

    async def main():
        fut = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(_response(fut, 30.0))
        await asyncio.sleep(0)  # it now waits on the response
        fut.set_result(None)  # the response ends...
        waiting.cancel()  # ...and the cancel arrives in the same iteration
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
