"""Edges of the estimate found by reading it against its docs: a request at the KV pool's block
boundary, one-token outputs, prefix-cache hits over prompts without block ids, the formula's
all-reduce latency, completions tied at a closed loop's window start, float32 on a GPU."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from servebench.cli import main
from servebench.estimate import catalog, models, roofline
from servebench.estimate.roofline import Deployment, Factors, capacity, serve
from servebench.estimate.sim import BLOCK, Load, simulate


def _cli(*args):
    return CliRunner().invoke(main, ["estimate", *args], catch_exceptions=False)


def _a10g(**kw) -> Deployment:
    return Deployment(models.load("llama-2-7b"), catalog.lookup("a10g"), 1, **kw)


@pytest.mark.parametrize("admit", ["prompt", "reserve"])
def test_a_request_past_the_pools_whole_blocks_does_not_fit_in_both_models(admit):
    d = _a10g(admit=admit, mem_fraction=0.705)
    pool = capacity(d)["kv_tokens"]
    room = (pool // BLOCK - (int(0.01 * (pool // BLOCK)) if admit == "prompt" else 0)) * BLOCK
    assert room < pool  # tokens the pool holds that no single request can be admitted into
    for seq, fits in ((room, True), (room + 1, False)):
        assert capacity(d, seq)["fits"] is fits
        assert simulate(d, Factors(), Load("closed", 1, requests=2, n_in=seq - 10, n_out=10))["fits"] is fits


def test_the_cli_says_does_not_fit_at_the_block_boundary_instead_of_failing():
    r = _cli("--model", "llama-2-7b", "--gpu", "a10g", "--engine", "vllm", "--mem-fraction", "0.705",
             "--input-tokens", "3600", "--output-tokens", "80", "--concurrency", "1")
    assert r.exit_code == 0 and "does not fit: one 3680-token sequence needs 230 KV blocks" in r.output.replace("\n", " ")


@pytest.mark.parametrize("extra", [["--load", "closed"], ["--scheduler", "formula"]])
def test_one_output_token_has_no_tpot_and_no_failure(extra):
    r = _cli("--model", "llama-2-7b", "--gpu", "a10g", "--input-tokens", "512", "--output-tokens", "1",
             "--concurrency", "1,4", "--json", *extra)
    assert r.exit_code == 0, r.output
    for lv in json.loads(r.output)["levels"]:
        assert lv["ttft_ms"] > 0 and lv["ttft_ms"] == pytest.approx(lv["e2e_ms"], rel=1e-6)
        if "--scheduler" not in extra:  # the simulator: no request has a second token to time
            assert lv["tpot_ms"] is None and "tpot_ms_band" not in lv


def test_the_prefix_hit_rate_counts_every_prompt_as_queried():
    # two prompts share four 256-token blocks; two others carry no block ids (all misses)
    d = _a10g(admit="prompt", prefix_cache=True)
    load = Load("trace", requests=4, n_in=(1024,) * 4, n_out=(8,) * 4, times=(0.0, 1.0, 2.0, 3.0),
                blocks=((1, 2, 3, 4), (1, 2, 3, 4), (), ()), block_tokens=256)
    p = simulate(d, Factors(), load)
    assert p["prefix_queried_tokens"] == 4096 and p["prefix_hit_tokens"] == 768  # the last block is computed again
    assert p["prefix_hit_rate"] == pytest.approx(768 / 4096)


def test_the_formula_pays_one_all_reduce_latency_per_layer_when_a_prompt_rides_a_decode_step():
    d = Deployment(models.load("llama-2-70b"), catalog.lookup("a100-80gb"), 4, schedule="mixed")
    f = Factors()
    alpha = roofline.link(d, f)[0]
    once = serve(d, 1, 512, 128, f, lockstep=False)["ttft_ms"]
    slower = serve(d, 1, 512, 128, Factors(**{**f.as_dict(), "alpha_us": alpha * 1e6 + 100}), lockstep=False)["ttft_ms"]
    # 100 µs more per collective: 2 collectives per layer, once each in the one step
    assert slower - once == pytest.approx(2 * 80 * 0.1, rel=0.01)


def test_closed_loop_throughput_leaves_out_completions_tied_with_the_window_start():
    d = _a10g()
    p = simulate(d, Factors(), Load("closed", users=64, requests=512, n_in=512, n_out=128, stagger_s=1.0), detail=True)
    by = sorted(p["requests"], key=lambda r: r.done)
    t0 = by[63].done
    after = [r for r in by if r.done > t0]
    assert len(after) < 512 - 64  # some ended in the same step as the 64th
    assert p["request_throughput"] == pytest.approx(len(after) / (by[-1].done - t0))


def test_float32_on_a_gpu_is_refused_not_priced_at_the_tensor_peak():
    r = CliRunner().invoke(main, ["estimate", "--model", "llama-3-8b", "--gpu", "h100", "--dtype", "float32"])
    assert r.exit_code == 2 and "no FP32 peak for H100 SXM" in r.output
    assert _cli("--model", "llama-3-8b", "--gpu", "h100", "--dtype", "bfloat16").exit_code == 0


def test_fp8_uses_the_fp8_peak_where_the_card_has_fp8_units_and_fp16_where_it_has_none():
    ada, ampere = catalog.lookup("rtx4090"), catalog.lookup("a100")
    assert ada.peak_flops("fp8") == 2 * ada.peak_flops("fp16")  # FP32 accumulate, both
    assert ampere.peak_flops("fp8") == ampere.peak_flops("fp16")  # no FP8 units on Ampere
