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


class ErrorPayload(bytes):
    """The data of an event sent with `event: error`."""

    __slots__ = ()


class SSEDecoder:
    __slots__ = ("_pending", "_skip_lf", "_data", "_event")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # bytes of the current, not yet terminated line
        self._skip_lf = False  # last read ended in "\r": a "\n" opening the next read is its pair
        self._data: list[bytes] = []  # data lines of the event being assembled
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
                self._pending.append(data)
            return []
        if self._pending:
            self._pending.append(data[:cut])
            block = b"".join(self._pending)
            self._pending.clear()
        else:
            block = data[:cut]
        rest = data[cut + 1 :]
        if rest:
            self._pending.append(rest)
        out: list[bytes] = []
        for line in block.split(b"\n"):
            self._line(line, out)
        return out

    def close(self) -> list[bytes]:
        """End of stream: return an event left without its closing blank line, if any."""
        out: list[bytes] = []
        if self._pending:
            line = b"".join(self._pending)
            self._pending.clear()
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
