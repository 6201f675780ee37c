"""Prefix-sharing prompts, checked token by token under the tiny model's real tokenizer: requests
that share block ids share exactly those tokens and differ right after (servebench.load.prefix)."""

from __future__ import annotations

import pytest

from servebench.config import RunConfig
from servebench.engines.presets import resolve_model
from servebench.load import workload
from servebench.load.prefix import PrefixPrompts, Shape, ideal_reuse
from servebench.load.prompts import ExactPrompts, WorkloadError, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_model("tiny"))


def ids(tok, text):
    return tok(text, add_special_tokens=True)["input_ids"]


def common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_shared_blocks_share_exactly_their_tokens(tok):
    B = 32
    shapes = [Shape(100, (1, 2, 3, 4)), Shape(90, (1, 2, 5)), Shape(64, (1, 2)), Shape(70, (1, 2)),
              Shape(50, (6,)), Shape(40, ()), Shape(40, ())]
    texts = PrefixPrompts(ExactPrompts(tok, 0), B, seed=3).build(shapes)
    toks = [ids(tok, t) for t in texts]
    assert [len(t) for t in toks] == [s.input_tokens for s in shapes]
    assert common(toks[0], toks[1]) == 2 * B  # blocks 1, 2 shared; block 3 vs 5 differ at once
    assert common(toks[2], toks[3]) == 64  # the whole of the shorter one
    assert toks[3][:64] == toks[2] and toks[0][:64] == toks[2]
    assert common(toks[0], toks[4]) == 1  # only BOS: distinct first blocks
    assert common(toks[5], toks[6]) == 1  # no blocks: nothing shared but BOS


def test_same_seed_same_prompts_other_seed_other_blocks(tok):
    shapes = [Shape(80, (10, 11)), Shape(80, (10, 12))]
    a = PrefixPrompts(ExactPrompts(tok, 0), 16, seed=1).build(shapes)
    assert a == PrefixPrompts(ExactPrompts(tok, 0), 16, seed=1).build(shapes)
    b = PrefixPrompts(ExactPrompts(tok, 0), 16, seed=2).build(shapes)
    assert common(ids(tok, a[0]), ids(tok, b[0])) < 16


def test_partial_last_block_is_a_prefix_of_the_full_one(tok):
    texts = PrefixPrompts(ExactPrompts(tok, 0), 32, seed=0).build([Shape(40, (1, 2)), Shape(64, (1, 2))])
    a, b = ids(tok, texts[0]), ids(tok, texts[1])
    assert b[:40] == a


def test_ideal_reuse_counts_tokens_in_blocks_seen_before():
    shapes = [Shape(100, (1, 2, 3, 4)), Shape(90, (1, 2, 5)), Shape(20, (1,))]
    r = ideal_reuse(shapes, 32)
    # request 2: blocks 1, 2 seen (64 tokens); request 3: block 1 seen, 20 tokens of it
    assert r["reused_tokens"] == 64 + 20 and r["input_tokens"] == 210
    assert r["share"] == pytest.approx(84 / 210) and r["distinct_blocks"] == 5
    # a block first held in part (a prompt that ended 10 tokens into it) serves only that part
    part = ideal_reuse([Shape(42, (1, 2)), Shape(64, (1, 2)), Shape(64, (1, 2))], 32)
    assert part["reused_tokens"] == (32 + 10) + (32 + 32)


def test_too_short_blocks_are_refused(tok):
    with pytest.raises(WorkloadError, match="too short"):
        PrefixPrompts(ExactPrompts(tok, 0), 4)


def test_scaled_mooncake_slice_keeps_its_reuse_token_exact(tok):
    cfg = RunConfig(load=dict(warmup=1), workload=dict(
        trace=dict(source="mooncake-conversation", requests=40, scale_lengths=1 / 16), max_input_tokens=1500))
    wl = workload.build(cfg, tok)
    assert len(wl.prompts) == 41 and cfg.load.requests == 40 and len(wl.offsets_ns) == 40
    toks = [ids(tok, p.text) for p in wl.prompts]
    assert [len(t) for t in toks] == [p.input_tokens for p in wl.prompts]
    block = wl.info["prefix"]["block_tokens"]
    assert block == 32
    from servebench.load.traces import load_trace

    reqs = load_trace("mooncake-conversation").requests[:40]
    for i in range(40):
        for j in range(i):
            a, b = reqs[i].blocks, reqs[j].blocks
            k = common(list(a), list(b))
            la, lb = wl.prompts[1 + i].input_tokens, wl.prompts[1 + j].input_tokens
            want = min(k * block, la, lb)
            got = common(toks[1 + i], toks[1 + j])
            if want < min(la, lb):
                assert got == want, (i, j)
            else:
                assert got >= want, (i, j)
    assert 0 < wl.info["prefix"]["share"] < 1


def test_synthetic_prefix_share(tok):
    cfg = RunConfig(load=dict(requests=40, warmup=0, seed=5),
                    workload=dict(input_tokens=120, output_tokens=4, prefix_share=0.5, prefix_tokens=48))
    wl = workload.build(cfg, tok)
    toks = [ids(tok, p.text) for p in wl.prompts]
    assert all(len(t) == 120 for t in toks)
    heads = {tuple(t[:48]) for t in toks}
    shared = [t for t in toks if sum(tuple(u[:48]) == tuple(t[:48]) for u in toks) > 1]
    assert 10 <= len(shared) <= 30  # about half of 40 start with one of 4 system prompts
    assert len({tuple(t[:48]) for t in shared}) <= 4 and len(heads) > 4
    assert wl.info["prefix"]["block_tokens"] == 48 and wl.info["prefix"]["prefix_share"] == 0.5


def test_a_prompt_without_blocks_shares_no_token_with_any_block(tok):
    # a trace's warm-ups (own words only) and its requests (block 0 first): a token-level
    # prefix cache (SGLang's) must find nothing of the one in the other, past BOS
    ep = ExactPrompts(tok, 0)
    b = PrefixPrompts(ep, 64, seed=0)
    own = [ids(tok, t) for t in b.build([Shape(64, ()) for _ in range(4)])]
    led = [ids(tok, t) for t in b.build([Shape(64, (k, k + 1)) for k in range(4)])]
    assert all(common(o, x) == ep.specials for o in own for x in led)


def test_a_block_first_seen_inside_a_prompt_can_later_start_one(tok):
    # a trace may use an id inside one prompt and at the start of another: the one that starts
    # with it still has its exact length, and prompts starting with it share that block exactly
    ep = ExactPrompts(tok, 0)
    shapes = [Shape(64, (7, bid)) for bid in range(40)] + [Shape(40, (bid, 99)) for bid in range(40)]
    shapes += [Shape(40, (bid, 98)) for bid in range(40)]
    toks = [ids(tok, t) for t in PrefixPrompts(ep, 32, seed=0).build(shapes)]
    assert [len(t) for t in toks] == [s.input_tokens for s in shapes]
    assert all(common(toks[40 + b], toks[80 + b]) == 32 for b in range(40))
