"""OpenAI-compatible streaming: /v1/completions and /v1/chat/completions (vLLM and others).

Wire format (vLLM serving_completion / serving_chat): `data: {json}\\n\\n` per chunk; with
`stream_options.include_usage` a last chunk with `"choices": []` and `usage`; then
`data: [DONE]`. A mid-stream failure is `data: {"error": {"message": ...}}` (older vLLM:
`{"object": "error", "message": ...}`), followed by `[DONE]`.

Which chunks count as a token (token_counts gets 1 for each):
- vLLM sends a chunk only when the engine produced new tokens, but its detokenizer may hold a
  token's text back (the first byte of a multi-byte UTF-8 character), so a chunk with empty
  text is still a token. Other servers (OpenAI itself, llama.cpp, ...) end with an extra chunk
  that has an empty text/delta and only a finish_reason; that one is not a token.
- So: a choices chunk counts when it carries text, or when it carries no finish_reason.
  The one case this miscounts is vLLM's last token having empty text (then one too few).
- Chat: the first chunk holding only the role (`{"role": "assistant", "content": ""}`) is not
  a token. Reasoning text (`reasoning_content` / `reasoning`) and tool-call deltas are.
- One chunk may carry several tokens (speculative decoding, multi-step scheduling); the text
  stream cannot tell. The usage chunk's `completion_tokens` is therefore the authoritative
  total (server_output_tokens); token_counts is the per-chunk view. When a chunk lists its
  `token_ids` (vLLM, with `extra={"return_token_ids": True}`) that list's length is exact.

`done` is `[DONE]`. Not every server sends it: `transformers serve` ends the body right after
the chunk holding `finish_reason` (and `usage`, when asked). decode treats a body that ends
cleanly after a finish_reason as complete, so `[DONE]` is optional; a stream that ends before
any finish_reason is truncated. Usage may come in its own `"choices": []` chunk (vLLM) or
inside the finish chunk (transformers): both are read.

Servers that send no usage at all (llama-cpp-python's server ignores `stream_options`): the
output count is sum(token_counts), one per chunk with text, reported as client-counted.

`extra` in build(): fields merged into the top-level JSON body (where OpenAI's sampling
parameters live); a None value removes a default (e.g. `{"ignore_eos": None}`); the string
"{max_tokens}" becomes this request's max_tokens (llama-cpp-python forces the length with
`"min_tokens": N`, not ignore_eos).
"""

from __future__ import annotations

from typing import Any

from servebench.adapters._json import as_int, dumps, json_events, merged
from servebench.adapters.base import Request
from servebench.records import StreamEvent

MAX_TOKENS = "{max_tokens}"  # an extra value filled with the request's max_tokens


def _usage(obj: dict[str, Any], ev: StreamEvent) -> None:
    usage = obj.get("usage")
    if usage:
        ev.prompt_tokens = as_int(usage.get("prompt_tokens"), "usage.prompt_tokens")
        ev.output_tokens = as_int(usage.get("completion_tokens"), "usage.completion_tokens")


def _per_request(extra: dict[str, Any] | None, max_tokens: int) -> dict[str, Any] | None:
    if not extra or MAX_TOKENS not in extra.values():
        return extra
    return {k: (max_tokens if v == MAX_TOKENS else v) for k, v in extra.items()}


def _exact_count(choice: dict[str, Any], ev: StreamEvent) -> None:
    # vLLM with `"return_token_ids": true` lists the chunk's new token ids: an exact count
    ids = choice.get("token_ids")
    if ids is not None:
        if not isinstance(ids, list):  # len() of a string or object would invent tokens (found by fuzzing)
            raise ValueError(f"token_ids is not a list: {type(ids).__name__}")
        ev.tokens = len(ids)


# after the request's own fields, in this order on the wire
_STREAMING = {"stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0}


def _request(path: str, body: dict[str, Any], max_tokens: int, extra: dict[str, Any] | None) -> Request:
    return Request("POST", path, dumps(merged({**body, **_STREAMING}, _per_request(extra, max_tokens))))


def _event(obj: dict[str, Any], read_choice) -> StreamEvent:
    """The event of one chunk: its first choice read by `read_choice`, then exact counts and usage."""
    ev = StreamEvent()
    choices = obj.get("choices")
    if choices:
        choice = choices[0]
        read_choice(choice, ev)
        _exact_count(choice, ev)
    _usage(obj, ev)
    return ev


def _completion_choice(choice: dict[str, Any], ev: StreamEvent) -> None:
    text = choice.get("text") or ""
    reason = choice.get("finish_reason")
    ev.text = text
    ev.finish_reason = reason
    if text or reason is None:
        ev.tokens = 1


def _chat_choice(choice: dict[str, Any], ev: StreamEvent) -> None:
    delta = choice.get("delta") or {}
    reason = choice.get("finish_reason")
    text = delta.get("content") or ""
    thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
    ev.text = text or thought
    ev.finish_reason = reason
    if text or thought or delta.get("tool_calls"):
        ev.tokens = 1
    elif reason is None and not delta.get("role"):  # "role": null (pydantic without exclude_none) is no role chunk
        ev.tokens = 1  # a token whose text the detokenizer is still holding back


class OpenAICompletions:
    name = "openai-completions"
    default_path = "/v1/completions"
    forces_length = True  # vLLM / SGLang honour ignore_eos; plain OpenAI servers may not

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        return _request(self.default_path, {"model": model, "prompt": prompt, "max_tokens": max_tokens},
                        max_tokens, extra)

    @json_events(done=True)
    def parse(self, obj: dict[str, Any], state: dict[str, Any]) -> StreamEvent | None:
        return _event(obj, _completion_choice)


class OpenAIChat:
    name = "openai-chat"
    default_path = "/v1/chat/completions"
    forces_length = True

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        return self.build_chat([{"role": "user", "content": prompt}], max_tokens, model=model, extra=extra)

    def build_chat(self, messages: list[dict[str, str]], max_tokens: int, *, model: str,
                   extra: dict[str, Any] | None = None) -> Request:
        """A whole conversation (multi-turn sessions: load/sessions.py); the server applies its template."""
        body = {
            "model": model,
            "messages": messages,
            # max_tokens is deprecated by OpenAI but is what older servers read; vLLM takes
            # either (max_completion_tokens wins), so send both
            "max_completion_tokens": max_tokens,
            "max_tokens": max_tokens,
        }
        return _request(self.default_path, body, max_tokens, extra)

    @json_events(done=True)
    def parse(self, obj: dict[str, Any], state: dict[str, Any]) -> StreamEvent | None:
        return _event(obj, _chat_choice)
