"""JSON helpers shared by the adapters and decode: orjson when present, json otherwise."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from servebench.records import StreamEvent

try:
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads  # JSONDecodeError subclasses ValueError

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is a soft dependency
    import json

    def loads(data: bytes) -> Any:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        try:
            return json.loads(data)
        except RecursionError:  # `[[[[...` a few thousand deep: a malformed payload, not a crash
            raise ValueError("JSON nested too deeply") from None

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def load_object(payload: bytes) -> dict[str, Any]:
    obj = loads(payload)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def as_int(value: Any, what: str) -> int | None:
    """A server-reported count: int or absent. bool is rejected (it is an int to Python)."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**63:  # the records store counts as int64
        raise ValueError(f"{what} is not a count: {value!r}")
    return value


def shape_checked(parse):
    """Turn the lookup errors of a payload with the wrong shape into the ValueError the Adapter
    contract promises, so decode reports `malformed event` instead of crashing."""

    @wraps(parse)
    def checked(self, payload: bytes, state: dict[str, Any]):
        try:
            return parse(self, payload, state)
        except (AttributeError, TypeError, KeyError, IndexError) as e:
            raise ValueError(f"unexpected {self.name} event shape ({type(e).__name__}: {e})") from None

    return checked


def json_events(*, done: bool):
    """The opening every JSON-per-event adapter shares: `[DONE]` (when the format sends it) is the
    final event, the payload must be a JSON object, and an error-shaped object is an error event.
    The decorated method gets the object; shape errors become the contract's ValueError."""

    def wrap(parse_obj):
        @shape_checked
        @wraps(parse_obj)
        def parse(self, payload: bytes, state: dict[str, Any]):
            if done and payload.strip() == b"[DONE]":
                return StreamEvent(done=True)
            obj = load_object(payload)
            err = error_text(obj)
            if err is not None:
                return StreamEvent(error=err)
            return parse_obj(self, obj, state)

        return parse

    return wrap


def error_text(obj: dict[str, Any], *, body: bool = False) -> str | None:
    """The message of an error-shaped object, or None when `obj` is not one.

    Stream events: TGI `{"error": "...", "error_type": ...}`, OpenAI/vLLM/SGLang/LightLLM
    `{"error": {"message": ...}}`, old vLLM `{"object": "error", "message": ...}`.
    With body=True (a non-2xx response) also FastAPI `{"detail": ...}` and a bare `message`.
    """
    err = obj.get("error")
    if isinstance(err, str):
        return err or "(empty error)"
    if isinstance(err, dict):
        msg = err.get("message")
        return str(msg) if msg else str(err)
    if obj.get("object") == "error":
        return str(obj.get("message") or obj)
    if not body:
        return None
    detail = obj.get("detail")
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", ()))
                parts.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if detail is not None:
        return str(detail)
    msg = obj.get("message")
    return str(msg) if msg is not None else None


def body_error_text(body: bytes, *, json_string: bool = False) -> str | None:
    """The error message a response or error-event body carries as JSON (`error_text` with
    body=True; with json_string a bare JSON string too), or None: the caller falls back to the
    raw text its own way."""
    try:
        obj = loads(bytes(body))  # orjson refuses bytes subclasses (decode's ErrorPayload)
    except ValueError:
        return None
    if isinstance(obj, dict):
        return error_text(obj, body=True) or None
    if json_string and isinstance(obj, str):
        return obj or None
    return None


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def merged(defaults: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` updated by `extra`; an extra value of None removes the field (for servers that
    reject one of the defaults, e.g. `ignore_eos` on a strict OpenAI-compatible server)."""
    if not extra:
        return defaults
    out = {**defaults, **extra}
    return {k: v for k, v in out.items() if v is not None}
