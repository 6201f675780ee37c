"""Hugging Face TGI native streaming: POST /generate_stream (router/src/server.rs).

Wire format: `data:{json}\\n\\n` (no space after the colon), `:` keep-alive comments, no
`[DONE]`. Every event carries one `token`; the last one also has `generated_text` and, with
`"details": true`, `details.{finish_reason, generated_tokens, input_length}`. A failure is one
event `data:{"error": "...", "error_type": "..."}` (also for validation errors, which arrive
as a 200 stream holding only that event).

Counting: every event with a `token` is one token, `special` ones (EOS) included, because TGI's
own `generated_tokens` counts them and each took a decode step. TGI has no `ignore_eos` over
HTTP, so the output length cannot be forced (forces_length=False): compare the requested
length with server_output_tokens.

`extra` in build(): fields merged into `parameters` (a None value removes a default).
LightLLM started with `--use_tgi_api` speaks this format too.
"""

from __future__ import annotations

from typing import Any

from servebench.adapters._json import as_int, dumps, json_events, merged
from servebench.adapters.base import Request
from servebench.records import StreamEvent


class TGI:
    name = "tgi"
    default_path = "/generate_stream"
    forces_length = False

    def build(self, prompt: str, max_tokens: int, *, model: str, extra: dict[str, Any] | None = None) -> Request:
        # `model` is not part of TGI's native API: a TGI server serves exactly one model
        params = {"max_new_tokens": max_tokens, "details": True, "do_sample": False}
        body = {"inputs": prompt, "parameters": merged(params, extra)}
        return Request("POST", self.default_path, dumps(body))

    @json_events(done=False)
    def parse(self, obj: dict[str, Any], state: dict[str, Any]) -> StreamEvent | None:
        ev = StreamEvent()
        token = obj.get("token")
        if token is not None:
            ev.tokens = 1
            ev.text = token.get("text") or ""
        if obj.get("generated_text") is not None:
            ev.done = True
            details = obj.get("details")
            if details:
                ev.finish_reason = details.get("finish_reason")
                ev.output_tokens = as_int(details.get("generated_tokens"), "details.generated_tokens")
                ev.prompt_tokens = as_int(details.get("input_length"), "details.input_length")
        return ev
