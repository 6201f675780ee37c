"""TGI before 2.0 launched every kernel from Python; from 2.0 (PR #1703) it replays CUDA graphs.
TensorRT-LLM 1.x serves from its PyTorch backend with CUDA graphs on by default (PR #5480); its
0.x TensorRT-engine rows fit a launch cost of their own. The per-layer host launch cost (host_us)
an engine's old rows teach is not paid by a version that runs graphs: not by Schmid's TGI 2.0.4
rows or the TensorRT-LLM 1.1 rows when the group is fitted, not by the engine the CLI models
(current)."""

from __future__ import annotations

import pytest

from servebench.estimate import catalog, engines, models, pubfit
from servebench.estimate.roofline import Deployment, Factors, decode_step
from servebench.estimate.sim import Load, simulate


def test_the_rule_by_engine_and_version():
    assert engines.cuda_graphs("tgi", "2.0.4") and engines.cuda_graphs("tgi", "3.3.6")
    assert not engines.cuda_graphs("tgi", "1.0.3") and not engines.cuda_graphs("tgi", "1.4.5")
    assert engines.cuda_graphs("tgi", None)  # a prediction models the current engine
    assert not engines.cuda_graphs("tgi", None, unknown_is_current=False)  # a row of its own time
    assert not engines.cuda_graphs("vllm", "0.4.3") and not engines.cuda_graphs(None, None)  # their own fit
    assert engines.cuda_graphs("trtllm", "1.1.0") and engines.cuda_graphs("trtllm", None)
    assert not engines.cuda_graphs("trtllm", "0.6.1") and not engines.cuda_graphs("trtllm", "0.21.0")
    # NIM names its own version, not TensorRT-LLM's: a row of its time, no graphs assumed
    assert not engines.cuda_graphs("trtllm", "NIM llama3-8b-instruct 1.0.0", unknown_is_current=False)


def test_the_shipped_rows_carry_it_by_their_version():
    got = {(r.source, r.d.graphs) for r in pubfit.rows() if r.engine == "tgi"}
    assert got == {("hf-sagemaker-tgi", False), ("tgi-issue-1129", False), ("hamel-latency-a6000", False),
                   ("philschmid-llmperf-a10g", True)}
    got = {(r.source, r.d.graphs) for r in pubfit.rows() if r.engine == "trtllm"}
    assert got == {("trtllm-perf-0.6.1", False), ("trtllm-h200-blog", False), ("jan-trtllm-vs-llamacpp", False),
                   ("philschmid-llmperf-a10g", False), ("trtllm-serve-a6000", True)}


def test_graphs_drop_the_host_launch_cost_and_nothing_else():
    d = Deployment(models.load("llama-2-70b"), catalog.lookup("a100-80gb"), 4)
    f = Factors(eta_mem=0.7, host_us=520.0)
    launched = decode_step(d, 1, 512, f)
    graphs = decode_step(Deployment(d.model, d.hw, d.tp, graphs=True), 1, 512, f)
    assert launched["host_s"] == pytest.approx(80 * 520e-6) and graphs["host_s"] == 0.0
    assert graphs["memory_s"] == launched["memory_s"] and graphs["s"] < launched["s"]
    load = Load(mode="closed", users=1, requests=4, n_in=256, n_out=32)
    slow = simulate(d, f, load)["tpot_ms"]
    fast = simulate(Deployment(d.model, d.hw, d.tp, graphs=True), f, load)["tpot_ms"]
    assert fast == pytest.approx(simulate(d, f.with_(host_us=0.0), load)["tpot_ms"]) and fast < 0.7 * slow


def test_the_cli_models_a_current_tgi_and_tensorrt_llm_without_the_launch_cost(monkeypatch):
    from click.testing import CliRunner

    from servebench.estimate.cli import estimate

    seen = []
    real = Deployment.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append(self.graphs)

    monkeypatch.setattr(Deployment, "__init__", spy)
    for engine, want in (("tgi", True), ("trtllm", True), ("vllm", False)):
        seen.clear()
        r = CliRunner().invoke(estimate, ["--model", "llama-2-7b", "--gpu", "a10g", "--engine", engine, "--json"])
        assert r.exit_code == 0, r.output
        assert seen and seen[0] is want


def test_a_documented_launch_cost_is_found_on_a_fine_grid_others_keep_the_doubling_one():
    """TGI 1.x's ~520 us per layer sits between the doubling grid's 400 and 800: its group
    searches a 50 us grid and finds it; an engine with no documented launch era keeps the doubling
    grid (on the fine one compiled runtimes took 450-500 us for small in-sample gains)."""
    from .test_estimate_pubfit_terms import TGI, VLLM, _rows

    truth = TGI.with_(eta_mem=0.6, host_us=550.0)
    start = VLLM.with_(layer_us=100.0)
    tgi = _rows("S", "a100-80gb", "tgi", truth) + _rows("T", "a100-80gb", "tgi", truth)
    assert pubfit._engine_group(tgi, start, frozenset()).host_us == 550.0
    trt = _rows("S", "a100-80gb", "trtllm", truth) + _rows("T", "a100-80gb", "trtllm", truth)
    assert pubfit._engine_group(trt, start, frozenset()).host_us in (400.0, 800.0)
