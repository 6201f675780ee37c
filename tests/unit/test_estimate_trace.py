"""`estimate --trace`: a trace's arrivals and lengths through the simulator (estimate/trace.py),
and the prefix cache that serves its shared prompt blocks from the KV pool (prefixcache.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from servebench.estimate import catalog, engines, models, sim, trace
from servebench.estimate.cli import estimate
from servebench.estimate.prefixcache import PrefixCache
from servebench.estimate.roofline import Deployment, Factors, capacity

BT = 64  # tokens per prefix block in these tests (4 KV blocks)


def _dep(**kw) -> Deployment:
    return Deployment(models.load("llama-2-7b"), catalog.lookup("a10g"), 1, **kw)


def _run(d: Deployment, load: sim.Load, monkeypatch, chunk=None) -> tuple[dict, sim._State]:
    seen, real = {}, sim._result

    def keep(s, *a):
        seen["s"] = s
        return real(s, *a)

    monkeypatch.setattr(sim, "_result", keep)
    return sim.simulate(d, Factors(), load, chunk=chunk, detail=True), seen["s"]


def _spaced(ins, ids, gap=100.0, n_out=8) -> sim.Load:
    """One request every `gap` seconds: each finds the engine idle."""
    return sim.Load("trace", requests=len(ins), n_in=tuple(ins), n_out=n_out, times=tuple(i * gap for i in range(len(ins))),
                    blocks=tuple(tuple(b) for b in ids), block_tokens=BT)


def test_a_shared_prefix_is_served_from_the_cache_and_not_prefilled_again(monkeypatch):
    load = _spaced([4 * BT + 10, 4 * BT + 30, 4 * BT + 30], [[1, 2, 3, 4], [1, 2, 7, 8], [9, 2, 3, 4]])
    on, s = _run(_dep(admit="prompt", prefix_cache=True), load, monkeypatch)
    off = sim.simulate(_dep(admit="prompt"), Factors(), load, detail=True)
    a, b, c = on["requests"]
    # leading blocks only: the second shares 1 and 2; the third starts with 9, so nothing
    assert (a.hit, b.hit, c.hit) == (0, 2, 0)
    assert on["prefix_hit_tokens"] == 2 * BT and on["prefix_queried_tokens"] == sum(load.n_in)
    assert on["prefix_hit_rate"] == pytest.approx(2 * BT / sum(load.n_in))
    # the hit is prefill not paid: the second's first token comes sooner than without a cache,
    # the others' exactly as without one
    ttft = lambda r: r.first - r.arrive  # noqa: E731
    assert ttft(b) < ttft(off["requests"][1])
    assert ttft(a) == pytest.approx(ttft(off["requests"][0])) and ttft(c) == pytest.approx(ttft(off["requests"][2]))
    assert "prefix_hit_rate" not in off
    # the pool's books balance: every block free again, the cached ones among them, none held
    assert s.free_blocks == capacity(_dep())["kv_tokens"] // sim.BLOCK
    assert not s.cache.held and len(s.cache.free) * s.cache.hb <= s.free_blocks


def test_at_least_one_prompt_token_is_computed():
    c = PrefixCache(BT, sim.BLOCK)
    c.publish((1, 2, 3), 0, 3 * BT, held := [])
    c.release(held)
    # the whole prompt is cached, yet its last block is computed again (its last token's logits)
    assert c.match((1, 2, 3), 3 * BT) == (2, 2)
    assert c.match((1, 2, 3), 3 * BT + 1) == (3, 3)


def test_cached_blocks_give_way_when_the_pool_needs_the_room(monkeypatch):
    d = _dep(admit="prompt", prefix_cache=True, mem_fraction=0.705)  # a pool of ~3,700 tokens
    pool = capacity(d)["kv_tokens"]
    # over half the pool: while the third runs (big/16 + 1 KV blocks), the second's cached
    # big/16 leave less than one prefix block (4 KV blocks) of the free KV for the first's
    big = (8 * (pool // sim.BLOCK - 5) // BT + 1) * BT
    ids = lambda k: list(range(k * 1000, k * 1000 + big // BT))  # noqa: E731
    again = _spaced([big + 5, big, big, big + 5], [ids(0), ids(1), ids(2), ids(0)])
    res, s = _run(d, again, monkeypatch)
    assert res["completed"] == 4 and res["requests"][3].hit == 0  # evicted: prefilled again
    near = _spaced([big + 5, big + 5], [ids(0), ids(0)])
    assert _run(d, near, monkeypatch)[0]["requests"][1].hit == big // BT  # still there: all whole blocks
    assert s.free_blocks == pool // sim.BLOCK and not s.cache.held


def test_eviction_takes_a_prompts_tail_first_so_its_head_still_hits():
    c = PrefixCache(BT, sim.BLOCK)
    held = []
    assert c.publish((1, 2, 3, 4), 0, 4 * BT + 1, held) == 4 * c.hb
    assert c.release(held) == 4 * c.hb and not held
    c.evict(2 * c.hb)  # room for two blocks' worth: the tail (4, 3) goes
    assert list(c.free) == [2, 1] and c.match((1, 2, 3, 4), 4 * BT + 1) == (2, 2)
    # a held block is never evicted; taking one moves it out of the free pool
    got, moved = c.take((1, 2), 2, 4 * BT + 1)
    assert got == [1, 2] and moved == 2 * c.hb and not c.free
    c.evict(0)
    assert c.held == {1: 1, 2: 1}


def test_requests_computing_the_same_blocks_at_once_both_pay_and_a_later_one_hits(monkeypatch):
    load = sim.Load("trace", requests=3, n_in=4 * BT + 1, n_out=4, times=(0.0, 0.0, 100.0),
                    blocks=((5, 6, 7, 8),), block_tokens=BT)
    res, s = _run(_dep(prefix_cache=True), load, monkeypatch)  # reserving (TGI-like) admission
    assert [r.hit for r in res["requests"]] == [0, 0, 4]
    assert s.free_blocks == capacity(_dep())["kv_tokens"] // sim.BLOCK and not s.cache.held


def test_preemption_with_a_prefix_cache_keeps_the_books(monkeypatch):
    d = _dep(admit="prompt", prefix_cache=True, mem_fraction=0.705)  # a pool of ~3,700 tokens
    load = sim.Load("burst", requests=120, n_in=256, n_out=256, blocks=((1, 2, 3), (1, 2, 4), (1, 5, 6)), block_tokens=BT)
    for chunk in (None, 512):
        res, s = _run(d, load, monkeypatch, chunk)
        assert res["completed"] == 120 and res["preemptions"] > 0 and res["prefix_hit_tokens"] > 0
        assert s.free_blocks == capacity(d)["kv_tokens"] // sim.BLOCK and not s.cache.held
        assert s.ctx == 0 and s.running == 0 and not s.waiting


def test_a_trace_replays_at_its_own_times_and_speed():
    load = sim.Load("trace", requests=3, n_in=(100, 200, 300), n_out=(5, 6, 7), times=(0.0, 10.0, 25.0))
    res = sim.simulate(_dep(), Factors(), load, detail=True)
    reqs = res["requests"]
    assert [r.arrive for r in reqs] == [0.0, 10.0, 25.0] and [r.n_in for r in reqs] == [100, 200, 300]
    assert all(r.arrive <= r.admit <= r.first < r.done for r in reqs)
    assert res["queue_ms"] == 0.0  # an idle engine: nobody waits
    tl = trace.TraceLoad({}, (0.0, 10.0, 25.0), (100, 200, 300), (5, 6, 7), None, 0)
    assert trace.load_at(tl, 4.0).times == (0.0, 2.5, 6.25)
    with pytest.raises(ValueError, match="one arrival time per request"):
        sim.simulate(_dep(), Factors(), sim.Load("trace", requests=3, n_in=1, n_out=1, times=(0.0,)))


def test_the_trace_is_read_and_cut_as_run_reads_it():
    tl = trace.read("mooncake-conversation", window="0:60", requests=50, scale_lengths=0.25)
    assert tl.info["requests"] == len(tl.times) == 50 and tl.block_tokens == 128
    assert tl.times[0] == 0.0 and max(tl.times) < 60
    assert tl.info["prefix"]["block_tokens"] == 128 and 0 < tl.info["prefix"]["share"] < 1
    full = trace.read("mooncake-conversation")
    assert [max(1, round(n * 0.25)) for n in full.n_in[:50]] == list(tl.n_in)
    az = trace.read("azure-conv-2023", requests=20)
    assert az.blocks is None and az.block_tokens == 0 and "prefix" not in az.info


def test_vllm_chunks_prompts_at_its_default_token_budget():
    assert trace.prefill_chunk("vllm", catalog.lookup("h100-sxm")) == 8192
    assert trace.prefill_chunk("vllm", catalog.lookup("a100-80gb")) == 2048  # vLLM keeps the A100 at 2,048
    assert trace.prefill_chunk("vllm", catalog.lookup("a800")) == 8192  # its name is not an A100's
    assert trace.prefill_chunk("vllm", catalog.lookup("a10g")) == 2048
    # 192 GB: the pinned image (v0.11.0) has no tier above 70 GiB; vLLM 0.28 gives it 16,384
    assert trace.prefill_chunk("vllm", catalog.lookup("mi300x")) == 8192
    assert trace.prefill_chunk("vllm", catalog.lookup("cpu")) == 2048
    assert trace.prefill_chunk("vllm", catalog.lookup("cpu"), tp=2) == 4096
    assert trace.prefill_chunk("tgi", catalog.lookup("h100-sxm")) is None


def test_the_running_batch_cap_is_the_engines_default_unless_given():
    h100, a100, cpu = catalog.lookup("h100-sxm"), catalog.lookup("a100-80gb"), catalog.lookup("cpu")
    assert [engines.max_num_seqs("vllm", hw) for hw in (h100, a100, cpu)] == [1024, 256, 128]
    assert engines.max_num_seqs("vllm", cpu, tp=2) == 256 and engines.max_num_seqs("tgi", h100) == 256
    burst = ["--model", "llama-3-8b", "--gpu", "h100-sxm", "--load", "burst", "--concurrency", "1000", "--json"]
    runs = {seqs: json.loads(CliRunner().invoke(estimate, [*burst, *seqs]).output) for seqs in ((), ("--max-num-seqs", "256"))}
    own, capped = runs[()], runs[("--max-num-seqs", "256")]
    assert own["capacity"]["max_num_seqs"] == 1024 and capped["capacity"]["max_num_seqs"] == 256
    # 452,405 KV tokens hold 706 sequences of 640: the pool binds under vLLM's own cap, 256 binds otherwise
    assert own["capacity"]["max_batch"] == 706 and capped["capacity"]["max_batch"] == 256
    assert own["levels"][0]["batch"] > 256 >= capped["levels"][0]["batch"]
    tgi = json.loads(CliRunner().invoke(estimate, [*burst, "--engine", "tgi"]).output)
    assert tgi["capacity"]["max_num_seqs"] == 256


def _cli(*args):
    return CliRunner().invoke(estimate, ["--model", "llama-3-8b", "--gpu", "a100-80gb", *args])


def test_the_cli_estimates_a_trace_per_replay_speed():
    base = ["--trace", "mooncake-conversation", "--trace-scale-lengths", "0.25", "--requests", "150", "--trace-speed", "0.5,4"]
    r = _cli(*base, "--json", "--price", "2")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    w = d["workload"]
    assert w["load"] == "trace" and w["trace"]["requests"] == 150 and w["prefix_cache"] is True
    assert w["prefill_chunk_tokens"] == 2048
    slow, fast = d["levels"]
    assert (slow["speed"], fast["speed"]) == (0.5, 4.0)
    assert fast["offered_rate_per_s"] == pytest.approx(8 * slow["offered_rate_per_s"])
    assert 0 < slow["prefix_hit_rate"] <= w["trace"]["prefix"]["share"]
    # eight times the arrivals on one GPU: requests wait
    assert fast["queue_ms"] > slow["queue_ms"] and fast["ttft_ms_p99"] > slow["ttft_ms_p99"]
    assert slow["ttft_ms_band"][0] < slow["ttft_ms"] < slow["ttft_ms_band"][1] and "usd_per_1m_output_tokens" in slow
    # TGI keeps no prefix cache unless asked
    tgi = json.loads(_cli(*base, "--engine", "tgi", "--json").output)
    assert tgi["workload"]["prefix_cache"] is False and "prefix_hit_rate" not in tgi["levels"][0]
    on = json.loads(_cli(*base, "--engine", "tgi", "--prefix-cache", "on", "--json").output)
    assert on["levels"][0]["prefix_hit_rate"] > 0
    text = " ".join(_cli(*base).output.split())
    assert "trace mooncake-conversation: 150 requests" in text and "prefix cache on" in text
    assert "Estimate per replay speed" in text and "x0.5" in text


@pytest.mark.parametrize("args, says", [
    (["--trace", "azure-conv-2023", "--concurrency", "4"], "--concurrency: not with --trace"),
    (["--trace", "azure-conv-2023", "--input-tokens", "100", "--load", "rate"], "--input-tokens, --load: not with --trace"),
    (["--trace-speed", "2"], "--trace-speed: only with --trace"),
    (["--prefix-cache", "on"], "--prefix-cache: only with --trace"),
    (["--trace", "no/such/trace.jsonl"], "no such file, and not a shipped trace"),
    (["--trace", "azure-conv-2023", "--trace-window", "9"], "--trace-window: '9': expected START:END"),
    (["--trace", "azure-conv-2023", "--trace-speed", "0"], "speeds must be finite and > 0"),
    (["--trace", "azure-conv-2023", "--requests", "0"], "--requests: Input should be greater than or equal to 1"),
    (["--trace", "azure-conv-2023", "--trace-scale-lengths", "0"], "--trace-scale-lengths: Input should be greater than 0"),
])
def test_bad_trace_options_fail_in_one_line(args, says):
    r = _cli(*args)
    assert r.exit_code == 2 and says in r.output, r.output


def test_a_trace_of_prompt_texts_or_too_long_requests_says_so(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"time_s": 0, "input_tokens": 5, "output_tokens": 3}\n'
                 '{"time_s": 1, "output_tokens": 3, "prompt": "hello there"}\n')
    r = _cli("--trace", str(f))
    assert r.exit_code == 2 and "t.jsonl:2: a prompt given as text has no token count" in r.output
    f.write_text('{"time_s": 0, "input_tokens": 5, "output_tokens": 3, "prompt": "hello there"}\n')
    assert json.loads(_cli("--trace", str(f), "--json").output)["workload"]["trace"]["input_tokens"]["max"] == 5
    # a 121,924-token prompt within Llama-3.1's context, beyond one A10G's KV cache
    r = CliRunner().invoke(estimate, ["--model", "llama-3.1-8b", "--gpu", "a10g", "--trace", "mooncake-conversation"])
    assert r.exit_code == 0 and "does not fit" in r.output and "tokens needs more KV than" in " ".join(r.output.split())


def test_requests_are_clipped_to_the_models_context_as_run_clips_them():
    raw = trace.read("azure-conv-2023")
    tl = trace.read("azure-conv-2023", context=4096)
    assert raw.info["clipped"] == {"input": 0, "output": 0, "context": None}
    assert tl.info["clipped"]["input"] > 0 and tl.info["clipped"]["context"] == 4096
    for (i, o), (i2, o2) in zip(zip(raw.n_in, raw.n_out), zip(tl.n_in, tl.n_out)):
        assert i2 + o2 <= 4096 and o2 == o and (i2 == i if i + o <= 4096 else i2 == 4096 - o)
    # the CLI takes the context from the model's config: Llama-2 4,096, Llama-3.1 131,072 (not 3's 8,192)
    assert models.load("llama-2-7b").context == 4096 and models.load("llama-3-8b").context == 8192
    assert models.load("meta-llama/Llama-3.1-8B-Instruct").context == 131072
    r = CliRunner().invoke(estimate, ["--model", "llama-2-7b", "--gpu", "a100-80gb", "--trace", "azure-conv-2023",
                                      "--requests", "400", "--json"])
    w = json.loads(r.output)["workload"]["trace"]
    assert w["clipped"]["context"] == 4096 and w["input_tokens"]["max"] <= 4096


def test_the_prefix_cache_matches_vllms_own_count_on_a_recorded_replay():
    """tests/fixtures/estimate_cpu/traces-20261207: a mooncake slice replayed on vLLM CPU by
    `servebench run --trace` (scripts/estimate_trace_check.py); vLLM counted its prefix hits."""
    from pathlib import Path

    fix = Path(__file__).parents[1] / "fixtures/estimate_cpu/traces-20261207"
    run = next(fix.glob("*-mooncake"))
    measured = json.loads((run / "summary.json").read_text())["telemetry"]["server_metrics"]["prefix_cache_hit_rate"]
    # three of the six recorded runs (c1, c4, the burst): enough to fit, half the suite's time
    calib = [x for d in sorted(fix.glob("*-c1")) + sorted(fix.glob("*-c4")) + sorted(fix.glob("*-burst"))
             for x in ("--calibrate", str(d))]
    r = CliRunner().invoke(estimate, ["--model", "tiny", "--gpu", "cpu", *calib, "--trace", "mooncake-conversation",
                                      "--trace-window", "0:120", "--trace-scale-lengths", "0.25", "--trace-speed", "2",
                                      "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    w = d["workload"]["trace"]
    recorded = json.loads((run / "summary.json").read_text())["workload"]
    # the same requests as the replay: count, clipping to tiny's 2,048-token context, ideal reuse
    assert w["requests"] == recorded["trace"]["requests"] and w["clipped"]["input"] == recorded["clipped"]["input"]
    assert w["prefix"]["share"] == pytest.approx(recorded["prefix"]["share"], abs=0.005)
    assert d["calibration"]["runs"] == 3
    assert d["levels"][0]["prefix_hit_rate"] == pytest.approx(measured, abs=0.01)


def test_blocks_of_a_size_not_a_multiple_of_the_kv_block_keep_the_books(monkeypatch):
    """56-token trace blocks (a trace scaled by 0.11): 3 whole KV blocks each are shared, the
    rest stays the request's own; every block comes back, preempting or not."""
    for admit, mem in (("prompt", 0.66), ("reserve", 0.9)):
        d = _dep(admit=admit, prefix_cache=True, mem_fraction=mem)
        load = sim.Load("burst", requests=150, n_in=(250, 333, 410), n_out=200,
                        blocks=((1, 2, 3, 4), (1, 2, 3, 7, 8), (1, 12)), block_tokens=56)
        res, s = _run(d, load, monkeypatch, 512)
        assert s.cache.hb == 3 and res["completed"] == 150 and res["prefix_hit_tokens"] > 0
        assert s.free_blocks == capacity(d)["kv_tokens"] // sim.BLOCK and not s.cache.held
    # blocks smaller than a KV block cannot be shared at all: no cache, no hits
    tiny = sim.Load("burst", requests=4, n_in=100, n_out=4, blocks=((1, 2, 3),), block_tokens=8)
    assert "prefix_hit_rate" not in sim.simulate(_dep(prefix_cache=True), Factors(), tiny)
