"""Adapters: request bodies each engine needs, and parsing of single stream payloads."""

from __future__ import annotations

import json

import pytest

from servebench.adapters import ADAPTERS, get_adapter
from servebench.adapters.base import Request
from servebench.records import StreamEvent


def body(name: str, extra=None) -> dict:
    req = ADAPTERS[name].build("Hello wörld", 7, model="tiny", extra=extra)
    assert isinstance(req, Request) and req.method == "POST"
    assert req.path == ADAPTERS[name].default_path
    return json.loads(req.body)


def parse(name: str, obj, state=None) -> StreamEvent | None:
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return ADAPTERS[name].parse(payload, {} if state is None else state)


def test_registry_keys_and_names():
    assert set(ADAPTERS) == {"openai-completions", "openai-chat", "tgi", "lightllm", "sglang"}
    assert all(a.name == k for k, a in ADAPTERS.items())
    assert [k for k, a in ADAPTERS.items() if not a.forces_length] == ["tgi"]


def test_get_adapter_unknown_name_is_one_line():
    with pytest.raises(ValueError, match=r"^unknown api 'vllm'; choose one of: openai-completions, ") as e:
        get_adapter("vllm")
    assert "\n" not in str(e.value)
    assert get_adapter("tgi") is ADAPTERS["tgi"]


def test_build_bodies():
    assert body("openai-completions") == {
        "model": "tiny", "prompt": "Hello wörld", "max_tokens": 7, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0}
    chat = body("openai-chat")
    assert chat["messages"] == [{"role": "user", "content": "Hello wörld"}]
    assert chat["max_completion_tokens"] == chat["max_tokens"] == 7 and chat["ignore_eos"] is True
    assert body("tgi") == {"inputs": "Hello wörld",
                           "parameters": {"max_new_tokens": 7, "details": True, "do_sample": False}}
    assert body("lightllm") == {"inputs": "Hello wörld", "multimodal_params": {},
                                "parameters": {"max_new_tokens": 7, "ignore_eos": True, "do_sample": False}}
    assert body("sglang") == {"text": "Hello wörld", "stream": True,
                              "sampling_params": {"max_new_tokens": 7, "ignore_eos": True, "temperature": 0}}


def test_extra_merges_into_sampling_parameters_and_none_removes():
    assert body("openai-completions", {"ignore_eos": None, "top_k": 1})["top_k"] == 1
    assert "ignore_eos" not in body("openai-completions", {"ignore_eos": None})
    assert body("tgi", {"seed": 3, "details": None})["parameters"] == {"max_new_tokens": 7, "do_sample": False, "seed": 3}
    assert body("sglang", {"temperature": 0.5})["sampling_params"]["temperature"] == 0.5
    assert body("lightllm", {"top_k": 2})["parameters"]["top_k"] == 2


def test_max_tokens_placeholder_is_filled_per_request():
    # llama-cpp-python forces the length with min_tokens = max_tokens
    for name in ("openai-completions", "openai-chat"):
        req = ADAPTERS[name].build("p", 9, model="m", extra={"min_tokens": "{max_tokens}", "ignore_eos": None})
        b = json.loads(req.body)
        assert b["min_tokens"] == 9 and b["max_tokens"] == 9 and "ignore_eos" not in b


def test_build_escapes_prompt_as_json():
    req = ADAPTERS["openai-completions"].build('a "quoted"\nline', 1, model="m")
    assert json.loads(req.body)["prompt"] == 'a "quoted"\nline'


# ---------------------------------------------------------------- openai-completions
def cmpl(text, finish=None, **more):
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish, **more}]}


@pytest.mark.parametrize("chunk, tokens", [
    (cmpl(" a"), 1),
    (cmpl(""), 1),  # vLLM: token whose text is held back
    (cmpl("!", "length"), 1),
    (cmpl("", "stop"), 0),  # OpenAI-style closing chunk, no token
    (cmpl("", None, token_ids=[5, 6, 7]), 3),  # return_token_ids: exact
    (cmpl(" ab", "length", token_ids=[5, 6]), 2),
    ({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}, 0),
])
def test_completions_token_rule(chunk, tokens):
    assert parse("openai-completions", chunk).tokens == tokens


def test_completions_usage_and_done():
    ev = parse("openai-completions", {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    assert (ev.prompt_tokens, ev.output_tokens, ev.done) == (3, 9, False)
    assert parse("openai-completions", b"[DONE]") == StreamEvent(done=True)
    assert parse("openai-completions", cmpl(" x", "length")).finish_reason == "length"


def test_openai_error_shapes():
    assert parse("openai-completions", {"error": {"message": "boom", "code": 500}}).error == "boom"
    assert parse("openai-chat", {"object": "error", "message": "old", "code": 400}).error == "old"


@pytest.mark.parametrize("payload", [b"{bad", b"[1, 2]", b'{"choices": [5]}', b'{"choices": "x"}',
                                     b'{"choices": [], "usage": {"completion_tokens": "9"}}'])
def test_completions_malformed_raises_value_error(payload):
    with pytest.raises(ValueError):
        parse("openai-completions", payload)


# ---------------------------------------------------------------- openai-chat
def chat(delta, finish=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("chunk, tokens", [
    (chat({"role": "assistant", "content": ""}), 0),  # vLLM's first chunk
    (chat({"role": "assistant", "content": "Hi"}), 1),  # TGI repeats the role on every chunk
    (chat({"content": " there"}), 1),
    (chat({"reasoning_content": "hmm"}), 1),
    (chat({"reasoning": "hmm"}), 1),
    (chat({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}), 1),
    (chat({}), 1),  # no text yet, generation still running: a held-back token
    (chat({"role": None, "content": None}), 1),  # the same, dumped without exclude_none
    (chat({}, "stop"), 0),  # OpenAI-style closing chunk
    (chat({"content": "."}, "length"), 1),
])
def test_chat_token_rule(chunk, tokens):
    assert parse("openai-chat", chunk).tokens == tokens


def test_chat_text_and_usage():
    ev = parse("openai-chat", chat({"content": "é"}))
    assert ev.text == "é"
    ev = parse("openai-chat", {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    assert (ev.tokens, ev.prompt_tokens, ev.output_tokens) == (0, 12, 3)
    assert parse("openai-chat", b"[DONE]").done is True


# ---------------------------------------------------------------- tgi
def tgi_ev(text="a", special=False, **more):
    return {"index": 1, "token": {"id": 1, "text": text, "logprob": -0.1, "special": special},
            "generated_text": None, "details": None, **more}


def test_tgi_tokens_special_counted_and_final_details():
    assert parse("tgi", tgi_ev()).tokens == 1
    assert parse("tgi", tgi_ev("</s>", True)).tokens == 1
    ev = parse("tgi", tgi_ev("</s>", True, generated_text="x", details={
        "finish_reason": "length", "generated_tokens": 12, "seed": None, "input_length": 30}))
    assert (ev.tokens, ev.done, ev.finish_reason, ev.output_tokens, ev.prompt_tokens) == (1, True, "length", 12, 30)


def test_tgi_final_without_details_and_empty_generated_text():
    ev = parse("tgi", tgi_ev(generated_text=""))
    assert ev.done is True and ev.output_tokens is None and ev.finish_reason is None


def test_tgi_error_event():
    ev = parse("tgi", {"error": "Input validation error: bad", "error_type": "validation"})
    assert ev.error == "Input validation error: bad" and ev.tokens == 0


def test_tgi_has_no_done_marker():
    with pytest.raises(ValueError):
        parse("tgi", b"[DONE]")


# ---------------------------------------------------------------- lightllm
def ll_ev(count, finished=False, prompt=4, reason=None):
    return {"token": {"id": 1, "text": "x", "logprob": -1.0, "special": False,
                      "count_output_tokens": count, "prompt_tokens": prompt},
            "generated_text": None, "finished": finished, "finish_reason": reason, "details": None}


def test_lightllm_counts_are_increments_of_the_cumulative_count():
    state: dict = {}
    got = [parse("lightllm", ll_ev(c), state).tokens for c in (1, 2, 4)]
    assert got == [1, 1, 2]
    ev = parse("lightllm", ll_ev(5, True, reason="length"), state)
    assert (ev.tokens, ev.done, ev.finish_reason, ev.output_tokens, ev.prompt_tokens) == (1, True, "length", 5, 4)


def test_lightllm_without_counts_is_one_per_token_and_prompt_zero_unknown():
    ev = parse("lightllm", ll_ev(0, prompt=0))
    assert (ev.tokens, ev.output_tokens, ev.prompt_tokens) == (1, None, None)


def test_lightllm_count_going_backwards_is_malformed():
    state = {"count": 3}
    with pytest.raises(ValueError, match="count_output_tokens went from 3 to 3"):
        parse("lightllm", ll_ev(3), state)


def test_lightllm_error_then_done():
    assert parse("lightllm", {"error": {"message": "too long", "type": "invalid_request_error"}}).error == "too long"
    assert parse("lightllm", b"[DONE]").done is True


# ---------------------------------------------------------------- sglang
def sg_ev(text, n, finish=None, prompt=9):
    return {"text": text, "meta_info": {"id": "x", "finish_reason": finish, "prompt_tokens": prompt,
                                        "completion_tokens": n}}


def test_sglang_cumulative_counts_and_text():
    state: dict = {}
    evs = [parse("sglang", e, state) for e in (sg_ev(" a", 1), sg_ev(" a b c", 3), sg_ev(" a b c", 3),
                                               sg_ev(" a b c d", 4, {"type": "length", "length": 4}))]
    assert [e.tokens for e in evs] == [1, 2, 0, 1]
    assert [e.text for e in evs] == [" a", " b c", "", " d"]
    assert (evs[-1].finish_reason, evs[-1].output_tokens, evs[-1].prompt_tokens, evs[-1].done) == ("length", 4, 9, False)
    assert parse("sglang", b"[DONE]", state).done is True


def test_sglang_abort_is_an_error_and_string_finish_reason_passes():
    ev = parse("sglang", sg_ev("", 0, {"type": "abort", "message": "prompt too long"}))
    assert ev.error == "request aborted by the server: prompt too long"
    assert parse("sglang", sg_ev("a", 1, "stop")).finish_reason == "stop"


def test_sglang_missing_or_decreasing_count_is_malformed():
    with pytest.raises(ValueError):
        parse("sglang", {"text": "a", "meta_info": {}})
    with pytest.raises(ValueError, match="went from 5 to 2"):
        parse("sglang", sg_ev("a", 2), {"count": 5})
    assert parse("sglang", {"error": {"message": "bad input"}}).error == "bad input"


def test_bool_is_not_a_count():
    with pytest.raises(ValueError, match="not a count"):
        parse("sglang", sg_ev("a", True))
