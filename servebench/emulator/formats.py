"""Wire formats the emulator speaks, byte for byte as in /work/shared/engines.md.

Each format turns a parsed request (`Gen`) into the bytes of its stream events. Everything
that is constant over one response is rendered once per request (`prepare`), so the per-token
cost in the hot loop is a lookup or one small concatenation, never a `json.dumps`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

TOKEN_TEXT = " the"  # every emitted token; one token under common BPE vocabularies
TOKEN_ID = 279
_J = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # serde/pydantic style


class BadRequest(ValueError):
    """The request body is not what the engine accepts: answered with the engine's 4xx."""


@dataclass(slots=True)
class Gen:
    """One generation request, as the emulator understood it."""

    rid: str
    path: str
    prompt_tokens: int
    prompt_chars: int
    max_tokens: int
    stream: bool
    model: str = "emulator"
    include_usage: bool = False
    details: bool = False
    created: int = 0
    tmpl: Any = None  # per-format rendering cache, filled by prepare()
    extra: dict = field(default_factory=dict)


def chat_reply(text: str) -> str:
    """A chat answer's first token: a word derived from the conversation, so each answer in a
    multi-turn session is distinct and the same conversation always gets the same one."""
    return " r" + hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=4).hexdigest()


def count_words(text: str) -> int:
    return len(text.split())


def _int(v: Any, name: str, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BadRequest(f"{name} must be a positive integer, got {v!r}")
    return v


def _object(body: dict, key: str) -> dict:
    v = body.get(key) or {}
    if not isinstance(v, dict):
        raise BadRequest(f"{key} must be an object")
    return v


def _prompt_text(v: Any, name: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return v[0]  # batched prompts: the emulator serves the first (streaming is per prompt)
    raise BadRequest(f"{name} must be a string")


# ---------------------------------------------------------------- OpenAI (vLLM flavour)
class OpenAI:
    """`/v1/completions` and `/v1/chat/completions` as vLLM streams them."""

    name = "openai"
    routes = {"/v1/completions": "body", "/v1/chat/completions": "body"}

    def parse(self, path: str, body: dict, count: Callable[[str], int]) -> dict:
        if path.endswith("/chat/completions"):
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise BadRequest("messages must be a non-empty list")
            text = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
            mt = body.get("max_completion_tokens", body.get("max_tokens"))
            default = 16  # stands in for "until the context is full"
            extra = {"reply": chat_reply(text)}
        else:
            text = _prompt_text(body.get("prompt"), "prompt")
            mt, default = body.get("max_tokens"), 16  # vLLM's /v1/completions default
            extra = {}
        so = body.get("stream_options") or {}
        return dict(
            extra=extra,
            prompt_tokens=count(text),
            prompt_chars=len(text),
            max_tokens=_int(mt, "max_tokens", default),
            stream=bool(body.get("stream", False)),
            model=str(body.get("model") or "emulator"),
            include_usage=bool(isinstance(so, dict) and so.get("include_usage")),
        )

    def prepare(self, g: Gen) -> None:
        chat = g.path.endswith("/chat/completions")
        reply = g.extra.get("reply", TOKEN_TEXT)
        oid = f"{'chatcmpl' if chat else 'cmpl'}-{g.rid}"
        head = '{"id":%s,"object":"%s","created":%d,"model":%s,' % (
            _J(oid), "chat.completion.chunk" if chat else "text_completion", g.created, _J(g.model))
        tok = _J(TOKEN_TEXT)
        if chat:
            choice = '"choices":[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":%s,"stop_reason":null}]'
            first = head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
            first = b"data: " + first.encode() + b"\n\n"
            # the first token names the conversation: a multi-turn client must send it back
            first += ("data: " + head + choice % (_J(reply), '"length"' if g.max_tokens == 1 else "null") + "}\n\n").encode()
        else:
            choice = '"choices":[{"index":0,"text":%s,"logprobs":null,"finish_reason":%s,"stop_reason":null}]'
            first = b""
        mid = ("data: " + head + choice % (tok, "null") + "}\n\n").encode()
        last = ("data: " + head + choice % (tok, '"length"') + "}\n\n").encode()
        tail = b""
        if g.include_usage:
            u = '"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}' % (
                g.prompt_tokens, g.prompt_tokens + g.max_tokens, g.max_tokens)
            tail = ("data: " + head + '"choices":[],' + u + "}\n\n").encode()
        g.tmpl = (first, mid, last, tail + b"data: [DONE]\n\n", head, chat)

    def token(self, g: Gen, i: int) -> bytes:
        first, mid, last, _, _, chat = g.tmpl
        if i == 0:
            return first if chat else first + (last if g.max_tokens == 1 else mid)
        return last if i == g.max_tokens - 1 else mid

    def tail(self, g: Gen) -> bytes:
        return g.tmpl[3]

    def whole(self, g: Gen) -> tuple[bytes, list[tuple[str, str]]]:
        _, _, _, _, head, chat = g.tmpl
        text = _J((g.extra["reply"] + TOKEN_TEXT * (g.max_tokens - 1)) if chat else TOKEN_TEXT * g.max_tokens)
        head = head.replace(".chunk", "") if chat else head
        if chat:
            choice = '"choices":[{"index":0,"message":{"role":"assistant","content":%s},"logprobs":null,"finish_reason":"length","stop_reason":null}]' % text
        else:
            choice = '"choices":[{"index":0,"text":%s,"logprobs":null,"finish_reason":"length","stop_reason":null}]' % text
        u = '"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}' % (
            g.prompt_tokens, g.prompt_tokens + g.max_tokens, g.max_tokens)
        return (head + choice + "," + u + "}").encode(), []

    def error(self, status: int, msg: str) -> bytes:
        kind = "BadRequestError" if status < 500 else "InternalServerError"
        return _J({"object": "error", "message": msg, "type": kind, "param": None, "code": status}).encode()


# ---------------------------------------------------------------- TGI
class TGI:
    name = "tgi"
    routes = {"/generate_stream": True, "/generate": False}
    default_max = 100

    def parse(self, path: str, body: dict, count: Callable[[str], int]) -> dict:
        text = body.get("inputs")
        if not isinstance(text, str):
            raise BadRequest("inputs must be a string")
        p = _object(body, "parameters")
        return dict(
            prompt_tokens=count(text),
            prompt_chars=len(text),
            max_tokens=_int(p.get("max_new_tokens"), "max_new_tokens", self.default_max),
            details=bool(p.get("details", False)),
        )

    def prepare(self, g: Gen) -> None:
        tok = '"token":{"id":%d,"text":%s,"logprob":-0.5,"special":false}' % (TOKEN_ID, _J(TOKEN_TEXT))
        g.tmpl = ('data:{"index":', "," + tok + ',"generated_text":null,"details":null}\n\n', tok)

    def _details(self, g: Gen) -> str:
        if not g.details:
            return "null"
        return '{"finish_reason":"length","generated_tokens":%d,"seed":null,"input_length":%d}' % (
            g.max_tokens, g.prompt_tokens)

    def token(self, g: Gen, i: int) -> bytes:
        pre, post, tok = g.tmpl
        if i < g.max_tokens - 1:
            return (pre + str(i + 1) + post).encode()
        return ('data:{"index":%d,%s,"generated_text":%s,"details":%s}\n\n' % (
            i + 1, tok, _J(TOKEN_TEXT * g.max_tokens), self._details(g))).encode()

    def tail(self, g: Gen) -> bytes:
        return b""

    def whole(self, g: Gen) -> tuple[bytes, list[tuple[str, str]]]:
        body = '{"generated_text":%s' % _J(TOKEN_TEXT * g.max_tokens)
        if g.details:
            body += ',"details":{"finish_reason":"length","generated_tokens":%d,"seed":null,"prefill":[],"tokens":[]}' % g.max_tokens
        e = g.extra  # timings filled in by the server, in ms
        headers = [
            ("x-compute-type", "emulator"),
            ("x-compute-time", "%.3f" % (e.get("total_ms", 0) / 1e3)),
            ("x-total-time", str(round(e.get("total_ms", 0)))),
            ("x-validation-time", "0"),
            ("x-queue-time", str(round(e.get("queue_ms", 0)))),
            ("x-inference-time", str(round(e.get("inference_ms", 0)))),
            ("x-time-per-token", str(round(e.get("inference_ms", 0) / max(g.max_tokens, 1)))),
            ("x-prompt-tokens", str(g.prompt_tokens)),
            ("x-generated-tokens", str(g.max_tokens)),
        ]
        return (body + "}").encode(), headers

    def error(self, status: int, msg: str) -> bytes:
        kind = {422: "validation", 424: "generation", 429: "overloaded"}.get(status, "incomplete_generation")
        return _J({"error": msg, "error_type": kind}).encode()


# ---------------------------------------------------------------- LightLLM
class LightLLM(TGI):
    name = "lightllm"
    default_max = 16

    def prepare(self, g: Gen) -> None:
        g.tmpl = ('data:{"token":{"id":%d,"text":%s,"logprob":-0.5,"special":false,"count_output_tokens":' % (
            TOKEN_ID, _J(TOKEN_TEXT)), ',"prompt_tokens":%d},"generated_text":null,' % g.prompt_tokens)

    def token(self, g: Gen, i: int) -> bytes:
        pre, mid = g.tmpl
        if i < g.max_tokens - 1:
            end = '"finished":false,"finish_reason":null,"details":null}\n\n'
        else:
            end = '"finished":true,"finish_reason":"length","details":null}\n\n'
        return (pre + str(i + 1) + mid + end).encode()

    def whole(self, g: Gen) -> tuple[bytes, list[tuple[str, str]]]:
        return ('{"generated_text":[%s],"count_output_tokens":%d,"finish_reason":"length","prompt_tokens":%d}' % (
            _J(TOKEN_TEXT * g.max_tokens), g.max_tokens, g.prompt_tokens)).encode(), []


# ---------------------------------------------------------------- SGLang native
class SGLang:
    name = "sglang"
    routes = {"/generate": "body"}

    def parse(self, path: str, body: dict, count: Callable[[str], int]) -> dict:
        text = _prompt_text(body.get("text"), "text")
        sp = _object(body, "sampling_params")
        return dict(
            prompt_tokens=count(text),
            prompt_chars=len(text),
            max_tokens=_int(sp.get("max_new_tokens"), "max_new_tokens", 128),
            stream=bool(body.get("stream", False)),
        )

    def prepare(self, g: Gen) -> None:
        g.tmpl = (_J(g.rid), g.prompt_tokens)

    def _event(self, g: Gen, n: int) -> str:
        rid, pt = g.tmpl
        fin = "null" if n < g.max_tokens else '{"type":"length","length":%d}' % g.max_tokens
        return '{"text":%s,"meta_info":{"id":%s,"finish_reason":%s,"prompt_tokens":%d,"completion_tokens":%d,"cached_tokens":0}}' % (
            _J(TOKEN_TEXT * n), rid, fin, pt, n)

    def token(self, g: Gen, i: int) -> bytes:
        return ("data: " + self._event(g, i + 1) + "\n\n").encode()

    def tail(self, g: Gen) -> bytes:
        return b"data: [DONE]\n\n"

    def whole(self, g: Gen) -> tuple[bytes, list[tuple[str, str]]]:
        return self._event(g, g.max_tokens).encode(), []

    def error(self, status: int, msg: str) -> bytes:
        return _J({"error": {"message": msg}}).encode()


_OPENAI = OpenAI()
FORMATS: dict[str, Any] = {
    "openai": _OPENAI,
    "openai-chat": _OPENAI,  # vLLM serves both routes; the name only picks the documented default
    "tgi": TGI(),
    "lightllm": LightLLM(),
    "sglang": SGLang(),
}


def now_created() -> int:
    return int(time.time())
