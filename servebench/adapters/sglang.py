"""SGLang native streaming: POST /generate with `"stream": true` (sglang http_server.py).

Wire format: `data: {json}\\n\\n` (orjson, compact), then `data: [DONE]`. Each event holds the
CUMULATIVE `text` so far and `meta_info` with `prompt_tokens`, cumulative
`completion_tokens` and `finish_reason` (null, or an object such as
`{"type": "length", "length": 16}`; `{"type": "abort", "message": ...}` when the server
aborted the request). A failure is `data: {"error": {"message": ...}}` then `[DONE]`.

Counting: one event may add several tokens (SGLang's stream interval, speculative decoding),
so an event's tokens are the increase of `completion_tokens` (the per-token gap is that
event's gap divided by them, as sglang's bench_serving does). `state` keeps the last count.
`text` on the event is the new part, assuming cumulative text (the default); with
`--incremental-streaming-output` the text is already the delta and `StreamEvent.text` is wrong,
but no count depends on it.

`done` is `[DONE]`. `extra` in build(): fields merged into `sampling_params`.
"""

from __future__ import annotations

from typing import Any

from servebench.adapters._json import as_int, dumps, json_events, merged
from servebench.adapters.base import Request
from servebench.records import StreamEvent


class SGLang:
    name = "sglang"
    default_path = "/generate"
    forces_length = True

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        params = {"max_new_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
        body = {"text": prompt, "sampling_params": merged(params, extra), "stream": True}
        return Request("POST", self.default_path, dumps(body))

    @json_events(done=True)
    def parse(self, obj: dict[str, Any], state: dict[str, Any]) -> StreamEvent | None:
        meta = obj["meta_info"]
        count = as_int(meta["completion_tokens"], "meta_info.completion_tokens")
        prev = state.get("count", 0)
        if count < prev:
            raise ValueError(f"completion_tokens went from {prev} to {count}")
        state["count"] = count
        text = obj.get("text") or ""
        seen = state.get("text_len", 0)
        state["text_len"] = len(text)
        ev = StreamEvent(
            tokens=count - prev,
            text=text[seen:],
            prompt_tokens=as_int(meta.get("prompt_tokens"), "meta_info.prompt_tokens"),
            output_tokens=count,
        )
        reason = meta.get("finish_reason")
        if isinstance(reason, dict):
            kind = reason.get("type")
            if kind == "abort":
                ev.error = f"request aborted by the server: {reason.get('message') or reason}"
            ev.finish_reason = None if kind is None else str(kind)
        elif reason is not None:
            ev.finish_reason = str(reason)
        return ev
