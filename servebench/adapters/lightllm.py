"""LightLLM native streaming: POST /generate_stream (lightllm/server/api_lightllm.py).

Wire format: `data:{json}\\n\\n` (no space; `json.dumps` with its default `", "`/`": "`
separators and raw UTF-8), no `[DONE]` after a normal end. Each event:
`{"token": {"id", "text", "logprob", "special", "count_output_tokens", "prompt_tokens"},
"generated_text": null, "finished": bool, "finish_reason": ..., "details": null}`; the last
has `"finished": true`. Newer versions turn a failure after the stream started into
`data: {"error": {"message": ...}}` followed by `data: [DONE]`.

Counting: `count_output_tokens` is the cumulative output length, so an event's tokens are its
increase (1 per event in practice; more if a version ever batches). Versions that do not send
it (the field defaults to 0) count 1 per token event. `prompt_tokens` 0 means "not sent".
`extra` in build(): fields merged into `parameters` (a None value removes a default).
"""

from __future__ import annotations

from typing import Any

from servebench.adapters._json import as_int, dumps, json_events, merged
from servebench.adapters.base import Request
from servebench.records import StreamEvent


class LightLLM:
    name = "lightllm"
    default_path = "/generate_stream"
    forces_length = True  # ignore_eos is a LightLLM sampling parameter

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        params = {"max_new_tokens": max_tokens, "ignore_eos": True, "do_sample": False}
        body = {"inputs": prompt, "parameters": merged(params, extra), "multimodal_params": {}}
        return Request("POST", self.default_path, dumps(body))

    @json_events(done=True)  # [DONE] is only ever sent after an error event
    def parse(self, obj: dict[str, Any], state: dict[str, Any]) -> StreamEvent | None:
        ev = StreamEvent()
        token = obj.get("token")
        if token is not None:
            ev.text = token.get("text") or ""
            count = as_int(token.get("count_output_tokens"), "token.count_output_tokens")
            if count:
                prev = state.get("count", 0)
                if count <= prev:
                    raise ValueError(f"count_output_tokens went from {prev} to {count}")
                ev.tokens = count - prev
                ev.output_tokens = state["count"] = count
            else:
                ev.tokens = 1
            ev.prompt_tokens = as_int(token.get("prompt_tokens"), "token.prompt_tokens") or None
        reason = obj.get("finish_reason")
        if reason is not None:
            ev.finish_reason = reason
        if obj.get("finished"):
            ev.done = True
        return ev
