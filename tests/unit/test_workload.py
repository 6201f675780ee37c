"""Exact-length prompts under a real (generated) tokenizer, and the JSONL workload."""

from __future__ import annotations

import json

import pytest

from servebench.load import prompts as workload
from servebench.engines.presets import resolve_model


@pytest.fixture(scope="module")
def tok():
    return workload.load_tokenizer(resolve_model("tiny"))


@pytest.mark.parametrize("n", [4, 17, 512, 1000])
def test_every_prompt_has_exactly_n_tokens_with_specials(tok, n):
    prompts = workload.synthetic(tok, 30, n, 16, seed=1)
    assert [len(tok(p.text)["input_ids"]) for p in prompts] == [n] * 30
    assert all(p.input_tokens == n and p.output_tokens == 16 for p in prompts)
    assert len({p.text for p in prompts}) == 30  # distinct: no shared-prefix caching


def test_deterministic_by_seed(tok):
    a = workload.synthetic(tok, 5, 64, 8, seed=7)
    assert a == workload.synthetic(tok, 5, 64, 8, seed=7)
    assert a != workload.synthetic(tok, 5, 64, 8, seed=8)


def test_reuse_beyond_unique_pool_repeats_measured_prompts_never_a_warm_up(tok):
    p = workload.synthetic(tok, 9, 32, 8, seed=0, warmup=2, unique=5)
    assert len({x.text for x in p[:5]}) == 5
    # the measured ones repeat in order (2, 3, 4, 2, ...); the two warm-ups are never sent again
    assert [x.text for x in p[5:9]] == [p[i].text for i in (2, 3, 4, 2)]


def test_a_burst_of_1000_with_warm_ups_is_1002_distinct_prompts(tok):
    # the default pool was 1000 once: the burst's last two prompts were the warm-ups', served
    # from a prefix cache that the warm-ups had just filled
    p = workload.synthetic(tok, 1002, 8, 4, seed=0, warmup=2)
    assert len({x.text for x in p}) == 1002


def test_too_short_for_special_tokens_is_a_clear_error(tok):
    ep = workload.ExactPrompts(tok)
    assert ep.specials == 1  # the tiny preset adds BOS, as Llama tokenizers do
    with pytest.raises(workload.WorkloadError, match="special tokens"):
        workload.synthetic(tok, 1, ep.specials, 8)


def test_tokenizer_without_words_is_rejected():
    class Tiny:
        def __call__(self, text, add_special_tokens=True):
            if isinstance(text, list):
                return {"input_ids": [[1] * 2 for _ in text]}
            return {"input_ids": [1]}

        def get_vocab(self):
            return {"a": 0, "b": 1}

        def decode(self, ids):
            return "ab"

    with pytest.raises(workload.WorkloadError, match="too few single-token words"):
        workload.ExactPrompts(Tiny())


def test_missing_tokenizer_is_one_line():
    with pytest.raises(workload.WorkloadError) as e:
        workload.load_tokenizer("/nonexistent/model")
    assert "\n" not in str(e.value) and "/nonexistent/model" in str(e.value)


def test_jsonl_prompts_counted_and_cycled(tok, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "hello world"}) + "\n\n" + json.dumps({"prompt": "x", "output_tokens": 5}) + "\n")
    ps = workload.from_jsonl(f, tok, 9, n=3)
    assert [p.output_tokens for p in ps] == [9, 5, 9]
    assert ps[0].input_tokens == len(tok("hello world")["input_ids"])
    f.write_text('{"text": 1}\n')
    with pytest.raises(workload.WorkloadError, match=":1: expected"):
        workload.from_jsonl(f, tok, 9)
