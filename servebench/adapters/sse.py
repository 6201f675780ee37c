"""Incremental Server-Sent Events framing (the parts of the WHATWG algorithm engines use).

Runs after the run over every recorded body byte, so it works a read at a time on whole
`bytes` (find/replace/split), never a character at a time. Payloads stay `bytes` so a UTF-8
character split across two reads is only decoded once the event is whole.

Handled: `\\n`, `\\r\\n` and lone `\\r` line ends (also a `\\r\\n` split across reads);
`:` comment / keep-alive lines; `data:` with or without the one optional space; several
`data:` lines joined with `\\n`; `id:` / `retry:` / unknown fields ignored; an event split
across any number of reads and several events in one read; a last event with no blank line
after it (returned by `close()`).

`event: error` is the one event type surfaced: its payload comes back as `ErrorPayload`, a
`bytes` subclass, so callers that only want data keep working and decode can flag it.
"""

from __future__ import annotations


# Size caps (docs/faults.md): a server's line or event past these fails its request instead
# of growing the client's memory with it (a 50 MB line took 754 MB RSS at 2 streams). Far
# above anything an engine sends: SGLang's cumulative text reaches 8 MiB only after ~2 M tokens.
MAX_HEAD = 64 * 1024  # an HTTP response head, or one chunked-framing line
MAX_LINE = 8 * 2**20  # one line of the body (an SSE `data:` line, a whole JSON body)
MAX_EVENT = 16 * 2**20  # one SSE event (its lines up to the blank line)


class OversizedStream(ValueError):
    """A line or event past MAX_LINE / MAX_EVENT: the request fails with this message."""


class ErrorPayload(bytes):
    """The data of an event sent with `event: error`."""

    __slots__ = ()


class SSEDecoder:
    __slots__ = ("_pending", "_pending_n", "_skip_lf", "_data", "_data_n", "_event")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # bytes of the current, not yet terminated line
        self._pending_n = 0  # their length (MAX_LINE)
        self._skip_lf = False  # last read ended in "\r": a "\n" opening the next read is its pair
        self._data: list[bytes] = []  # data lines of the event being assembled
        self._data_n = 0  # their length (MAX_EVENT)
        self._event = b""  # its `event:` field

    def feed(self, data: bytes) -> list[bytes]:
        """Consume one read; return the data payloads of the events it completed."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            # Normalise every line end to "\n". A trailing "\r" already ends its line; remember
            # it so a "\n" at the start of the next read is not taken for an empty line.
            self._skip_lf = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n")
        if cut < 0:
            if data:
                self._pend(data)
            return []
        if self._pending:
            self._pending.append(data[:cut])
            block = b"".join(self._pending)
            self._pending.clear()
            self._pending_n = 0
        else:
            block = data[:cut]
        rest = data[cut + 1 :]
        if rest:
            self._pend(rest)
        out: list[bytes] = []
        for line in block.split(b"\n"):
            self._line(line, out)
        return out

    def _pend(self, part: bytes) -> None:
        self._pending_n += len(part)
        if self._pending_n > MAX_LINE:
            raise OversizedStream(f"stream line over {MAX_LINE >> 20} MiB (servebench's cap)")
        self._pending.append(part)

    def close(self) -> list[bytes]:
        """End of stream: return an event left without its closing blank line, if any."""
        out: list[bytes] = []
        if self._pending:
            line = b"".join(self._pending)
            self._pending.clear()
            self._pending_n = 0
            self._line(line, out)
        self._line(b"", out)
        self._skip_lf = False
        return out

    flush = close

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if not line:  # blank line: dispatch
            if self._data:
                payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                out.append(ErrorPayload(payload) if self._event == b"error" else payload)
                self._data = []
                self._data_n = 0
            self._event = b""
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data_n += len(value) + 1
            if self._data_n > MAX_EVENT or len(value) > MAX_LINE:
                raise OversizedStream(f"stream event over {MAX_EVENT >> 20} MiB (servebench's cap)"
                                      if self._data_n > MAX_EVENT else
                                      f"stream line over {MAX_LINE >> 20} MiB (servebench's cap)")
            self._data.append(value)
        elif name == b"event":
            self._event = value
        # id, retry and unknown fields carry nothing a benchmark needs


def iter_payloads(reads: list[bytes]) -> list[bytes]:
    """All payloads of a whole stream given as its reads (tests and one-off use)."""
    dec = SSEDecoder()
    out: list[bytes] = []
    for r in reads:
        out.extend(dec.feed(r))
    out.extend(dec.close())
    return out
