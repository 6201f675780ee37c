"""Catalog, model shapes, floors and the serving model (servebench.estimate)."""

from __future__ import annotations

import json

import pytest

from servebench.estimate import catalog, models
from servebench.estimate.roofline import Deployment, Factors, capacity, decode_step, prefill, serve


def test_catalog_names_users_say_and_nvml_names():
    assert catalog.lookup("a800").key == "a800-80gb-sxm"
    assert catalog.lookup("A800-80GB-SXM").key == "a800-80gb-sxm"
    assert catalog.lookup("NVIDIA A100-SXM4-40GB").key == "a100-40gb-sxm"
    assert catalog.lookup("NVIDIA GeForce RTX 4090").key == "rtx4090"
    assert catalog.lookup("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert catalog.lookup("h200").bandwidth_gbs == 4800
    # what NVML reports, which engines size their KV cache from: GDDR6 with ECC on, not 24 GiB
    assert catalog.lookup("NVIDIA A10G").memory_gib * 1024 == pytest.approx(23028, abs=0.1)
    assert catalog.lookup("NVIDIA A100-PCIE-40GB").key == "a100-40gb-pcie"
    with pytest.raises(KeyError, match="known: .*a10g"):
        catalog.lookup("tpu-v5")


@pytest.mark.parametrize("name,near", [("h100-nvl", "h100-sxm"), ("a800-40gb", "a800-80gb-sxm"),
                                       ("NVIDIA H200 NVL", "h200")])
def test_a_name_for_another_part_is_not_read_as_its_neighbour(name, near):
    # the longest catalog name a given one starts with is taken only where the rest names no
    # other form factor or memory size
    with pytest.raises(KeyError, match=f"not {near}, whose form factor or memory differs"):
        catalog.lookup(name)
    assert catalog.lookup("A800-SXM4-80GB-rev2").key == "a800-80gb-sxm"
    assert catalog.lookup("a100-sxm-80gb").key == "a100-80gb-sxm"


def test_every_gpu_row_has_figures_and_a_source():
    for key in catalog.gpu_names():
        hw = catalog.lookup(key)
        assert hw.source and hw.bandwidth_gbs > 0 and hw.bf16_tflops > 0 and hw.memory_gib > 0, key
        assert hw.link_gbs > 0 and hw.arch


def test_geforce_peak_is_the_fp32_accumulate_rate():
    assert catalog.lookup("rtx4090").peak_flops("fp16") == pytest.approx(165e12)
    assert catalog.lookup("rtx3090").peak_flops("fp16") == pytest.approx(71e12)
    assert catalog.lookup("h100-sxm").peak_flops("fp8") == pytest.approx(1979e12)
    assert catalog.lookup("a100").peak_flops("fp8") == pytest.approx(312e12)  # no FP8 units: falls back


def test_instance_types_map_to_gpus():
    hw, n = catalog.instance("ml.g5.12xlarge")
    assert (hw.key, n) == ("a10g", 4)
    hw, n = catalog.instance("p4d.24xlarge")
    assert (hw.key, n) == ("a100-40gb-sxm", 8)
    assert catalog.instance("ml.nope") is None


@pytest.mark.parametrize("name,params", [("meta-llama/Llama-2-7b-hf", 6.738e9), ("llama-2-13b", 13.016e9),
                                         ("Llama-2-70b-hf", 68.977e9), ("llama-3-8b", 8.03e9)])
def test_parameter_counts_match_the_published_sizes(name, params):
    assert models.load(name).params == pytest.approx(params, rel=0.002)


def test_kv_bytes_per_token_split_and_replicated_under_tensor_parallel():
    m70 = models.load("llama-2-70b")
    assert m70.kv_bytes_per_token() == 2 * 80 * 8 * 128 * 2
    assert m70.kv_bytes_per_token(tp=4) == 2 * 80 * 2 * 128 * 2
    assert m70.kv_bytes_per_token(tp=16) == 2 * 80 * 1 * 128 * 2  # 8 KV heads on 16 GPUs: replicated


def test_quantization_shrinks_linear_weights_only():
    fp16, gptq = models.load("llama-2-7b"), models.load("llama-2-7b", quant="gptq-int4")
    emb = 32000 * 4096 * 2 * 2  # embedding + LM head stay 16-bit
    assert gptq.weight_bytes() - emb == pytest.approx((fp16.weight_bytes() - emb) * 4.15625 / 16, rel=0.001)
    assert models.load("llama-2-7b", quant="fp8").compute == "fp8"
    with pytest.raises(ValueError, match="unknown quantization"):
        models.load("llama-2-7b", quant="int3")


def test_model_from_config_path_and_preset(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 1000, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = models.load(str(tmp_path / "config.json"))
    assert (m.kv_heads, m.head_dim, m.dtype_bytes) == (4, 64, 4)
    assert models.load(str(tmp_path)).params == m.params
    tiny = models.load("tiny")
    assert tiny.layers == 2 and tiny.params < 2e6
    with pytest.raises(KeyError, match="unknown model"):
        models.find_config("no-such-model")


def test_decode_floor_is_weights_over_bandwidth_per_gpu():
    m = models.load("llama-2-7b")
    d = Deployment(m, catalog.lookup("a10g"), tp=4)
    sol = Factors.speed_of_light()
    step = decode_step(d, 1, 300, sol)
    expected = (m.decode_weight_bytes() / 4 + 300 * m.kv_bytes_per_token(4)) / 600e9
    # 2 ring all-reduces per layer over PCIe, no latency; A10G has no peer access in the
    # cloud, so NCCL stages through host memory: half the link's bandwidth
    expected += 2 * 32 * (2 * 3 / 4 * 4096 * 2 / (31.5e9 * 0.5))
    assert step["s"] == pytest.approx(expected) and step["bound"] == "memory"
    assert 5.0e-3 < step["s"] < 6.0e-3  # ~13.2 GB / 4 GPUs / 600 GB/s
    # batch grows the KV term and the FLOPs; at huge batch decode turns compute-bound
    assert decode_step(d, 64, 300, sol)["kv_bytes"] == 64 * 300 * m.kv_bytes_per_token(4)
    assert decode_step(d, 4096, 10, sol)["bound"] == "compute"


def test_prefill_floor_is_flops_over_peak():
    m = models.load("llama-2-13b")
    d = Deployment(m, catalog.lookup("a100-40gb"), tp=1)
    pf = prefill(d, 2048, 2048, Factors.speed_of_light())
    assert pf["bound"] == "compute"
    # every prompt token through the decoder, one row of logits through the LM head
    body = m.matmul_params - m.vocab * m.hidden
    assert pf["s"] == pytest.approx((2 * body * 2048 + 2 * m.vocab * m.hidden + m.attn_flops(2048, 1024)) / 312e12)


def test_70b_fp16_on_one_24gb_card_does_not_fit_with_the_numbers():
    d = Deployment(models.load("llama-2-70b"), catalog.lookup("rtx4090"), tp=1)
    cap = capacity(d, 640)
    assert not cap["fits"]
    assert "128.5 GiB" in cap["why"] and "21.6 GiB usable" in cap["why"]
    assert serve(d, 1, 512, 128, Factors())["fits"] is False
    # on 8 A800s it fits with room for a large batch
    cap8 = capacity(Deployment(models.load("llama-2-70b"), catalog.lookup("a800"), tp=8), 640)
    assert cap8["fits"] and cap8["max_batch"] == 256 and cap8["kv_tokens"] > 1e6


def test_serving_model_throughput_saturates_and_queues_beyond_the_batch_cap():
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"), tp=1, max_num_seqs=32)
    f = Factors()
    r = [serve(d, c, 512, 128, f) for c in (1, 8, 32, 64)]
    tput = [x["output_tok_s"] for x in r]
    assert tput[0] < tput[1] < tput[2] and tput[3] == pytest.approx(tput[2])
    assert r[2]["queue_ms"] == 0 and r[3]["queue_ms"] > 0 and r[3]["ttft_ms"] > r[2]["ttft_ms"] + r[3]["queue_ms"] * 0.99
    one = r[0]
    assert one["ms_per_token"] == pytest.approx((one["ttft_ms"] + 127 * one["tpot_ms"]) / 128)
    # Little's law: in flight = throughput x latency
    for c, x in zip((1, 8, 32, 64), r):
        assert x["request_throughput"] * x["e2e_ms"] / 1e3 == pytest.approx(c, rel=1e-6)


def test_separate_prefill_slows_tpot_with_other_requests_prefills():
    m, hw = models.load("llama-2-7b"), catalog.lookup("a10g")
    sep = serve(Deployment(m, hw, 4, schedule="separate"), 20, 256, 50, Factors())
    mix = serve(Deployment(m, hw, 4, schedule="mixed"), 20, 256, 50, Factors())
    assert sep["tpot_ms"] > sep["decode_step_ms"] and sep["tpot_ms"] > mix["tpot_ms"]


def test_lockstep_waves_prefill_the_whole_batch_then_decode_alone():
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("h100-sxm"), tp=1)
    f = Factors()
    lock = serve(d, 64, 512, 128, f, lockstep=True)
    spread = serve(d, 64, 512, 128, f)
    assert lock["ttft_ms"] == pytest.approx(prefill(d, 64 * 512, 512, f)["s"] * 1e3)
    assert lock["tpot_ms"] == pytest.approx(decode_step(d, 64, 512 + 64, f)["s"] * 1e3)
    assert lock["ttft_ms"] > 10 * spread["ttft_ms"]  # a wave's prompts all wait for one big prefill
    assert lock["output_tok_s"] < spread["output_tok_s"]  # prompts no longer hide in memory-bound steps
    assert lock["request_throughput"] * lock["e2e_ms"] / 1e3 == pytest.approx(64)
    one = serve(d, 1, 512, 128, f, lockstep=True)
    assert one["ttft_ms"] == pytest.approx(serve(d, 1, 512, 128, f.with_(), lockstep=False)["ttft_ms"], rel=0.2)
