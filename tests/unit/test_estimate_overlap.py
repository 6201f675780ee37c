"""Kernel launches overlap the GPU's work (roofline.step_s): a step of an engine without CUDA
graphs takes max(GPU time, layers x host_us) + the serial step and per-sequence costs, not
their sum; with host_us = 0 (every engine with CUDA graphs) the step is what it always was,
the kernels' own latency (layer_us) included."""

from __future__ import annotations

import pytest

from servebench.estimate import catalog, models
from servebench.estimate.roofline import Deployment, Factors, decode_step, host_s, kernels_s, prefill, serve
from servebench.estimate.sim import Load, StepCost, simulate

F = Factors(eta_mem=0.8, eta_compute=0.6, step_ms=1.0, seq_ms=0.05, layer_us=30.0)


def _deps() -> list[Deployment]:
    # one GPU, four staged-PCIe GPUs (all-reduces in the GPU part), eight NVLink GPUs, and int4
    return [Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"), 1),
            Deployment(models.load("llama-2-13b"), catalog.lookup("a10g"), 4),
            Deployment(models.load("llama-2-70b"), catalog.lookup("a100-40gb"), 8),
            Deployment(models.load("llama-2-7b", quant="gptq"), catalog.lookup("a10g"), 1)]


def _summed(x: dict, d: Deployment, f: Factors) -> float:
    """The step as the model had it before the overlap: every part added."""
    return max(x["memory_s"], x["compute_s"]) + x["comm_s"] + f.step_ms / 1e3 + d.model.layers * f.layer_us / 1e6 + x["seq_s"]


@pytest.mark.parametrize("i", range(4))
def test_without_a_host_launch_cost_every_step_is_unchanged(i):
    d = _deps()[i]
    for batch, ctx in ((1, 300), (16, 600), (4096, 10)):
        x = decode_step(d, batch, ctx, F)
        assert x["host_s"] == 0.0 and x["s"] == pytest.approx(_summed(x, d, F), rel=1e-12)
        assert x["bound"] == ("memory" if x["memory_s"] >= x["compute_s"] else "compute")
    for n, ln in ((256, 256), (8 * 512, 512)):
        x = prefill(d, n, ln, F)
        assert x["host_s"] == 0.0 and x["s"] == pytest.approx(_summed(x, d, F), rel=1e-12)
    assert decode_step(d, 4096, 10, F)["bound"] == "compute" and decode_step(d, 1, 300, F)["bound"] == "memory"


def test_a_host_bound_step_takes_the_host_time_not_host_plus_gpu():
    """The seed study's 70B on 8 A100-40GB at one user: 41.35 ms per token, 517 us per layer of
    80 layers, where the GPU part is ~13 ms. Summed, the step would be ~56 ms."""
    d = _deps()[2]
    f = F.with_(host_us=520.0)
    x = decode_step(d, 1, 300, f)
    gpu = max(x["memory_s"], x["compute_s"]) + x["comm_s"] + kernels_s(d.model, f)
    assert x["host_s"] == pytest.approx(80 * 520e-6) and x["host_s"] > gpu > 0.005
    assert x["bound"] == "host"
    assert x["s"] == pytest.approx(x["host_s"] + f.step_ms / 1e3 + x["seq_s"])
    assert x["s"] < x["host_s"] + gpu  # the summed form, which this replaces
    pf = prefill(d, 256, 256, f)
    assert pf["bound"] == "host" and pf["s"] == pytest.approx(pf["host_s"] + f.step_ms / 1e3 + pf["seq_s"])


def test_a_launch_cost_hidden_under_the_gpu_time_changes_nothing_until_it_exceeds_it():
    d = _deps()[1]  # 13B on 4 A10G: the GPU part is ~15 ms per step
    base = decode_step(d, 1, 300, F)
    gpu = max(base["memory_s"], base["compute_s"]) + base["comm_s"] + kernels_s(d.model, F)
    hidden = F.with_(host_us=0.5 * gpu / d.model.layers * 1e6)
    assert decode_step(d, 1, 300, hidden)["s"] == pytest.approx(base["s"])
    assert decode_step(d, 1, 300, hidden)["bound"] == "memory"
    over = F.with_(host_us=2 * gpu / d.model.layers * 1e6)
    assert decode_step(d, 1, 300, over)["s"] == pytest.approx(2 * gpu + F.step_ms / 1e3 + base["seq_s"])
    assert host_s(d.model, over) == pytest.approx(2 * gpu)


def test_the_simulator_and_the_closed_forms_take_the_same_overlapped_step():
    d = _deps()[2]
    f = F.with_(host_us=520.0)
    step = decode_step(d, 1, 300 + 16, f)["s"]
    # one user, 300 -> 32 tokens: each decode step is host-bound and costs the host time
    sim = simulate(d, f, Load(mode="closed", users=1, requests=4, n_in=300, n_out=32))
    assert sim["tpot_ms"] == pytest.approx(step * 1e3, rel=0.01)
    cost = StepCost.of(d, f)
    assert cost.host == pytest.approx(host_s(d.model, f)) and cost.overhead == pytest.approx(1e-3)
    assert cost.step(300, 1, 300, 1) == pytest.approx(decode_step(d, 1, 300, f)["s"], rel=1e-9)
    for sched in ("mixed", "separate"):
        dd = Deployment(d.model, d.hw, d.tp, schedule=sched)
        s = serve(dd, 1, 300, 32, f)
        assert s["decode_bound"] == "host" and s["tpot_ms"] == pytest.approx(step * 1e3, rel=0.01)
        assert serve(dd, 1, 300, 32, F)["tpot_ms"] < s["tpot_ms"] < step * 1e3 + decode_step(d, 1, 316, F)["s"] * 1e3
