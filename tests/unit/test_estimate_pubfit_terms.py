"""The published-row fit's engine dimension and its int4 kernel factor, on synthetic rows made
from known factors (so what it recovers can be checked), not on the shipped rows."""

from __future__ import annotations

import pytest

from servebench.estimate import catalog, models, pubfit
from servebench.estimate.roofline import Deployment, Factors
from servebench.estimate.sim import Load

VLLM = Factors(eta_mem=0.7, eta_compute=0.6)
TGI = Factors(eta_mem=0.35, eta_compute=0.3)


def _rows(source: str, gpu: str, engine: str, truth: Factors, quant: str | None = None) -> list[pubfit.Row]:
    hw, out = catalog.lookup(gpu), []
    for name in ("llama-2-7b", "llama-2-13b"):
        for users in (1, 8):
            d = Deployment(models.load(name, quant=quant), hw, 1)
            load = Load(mode="closed", users=users, requests=users * 3, n_in=128, n_out=16, stagger_s=0.0)
            r = pubfit.Row(source, engine, hw.arch, d, load, {"tokens_per_s": 1.0, "ttft_ms": 1.0},
                           f"{source} {name} {quant} {engine} {users}")
            p = pubfit.predict(r, truth)
            r.measured = {m: p[m] for m in r.measured}
            out.append(r)
    return out


def test_engine_ratio_measured_on_one_family_carries_to_a_family_that_ran_one_engine():
    rows = (_rows("S", "a100-80gb", "vllm", VLLM) + _rows("S", "a100-80gb", "tgi", TGI)
            + _rows("H", "h100-sxm", "vllm", VLLM))
    fitted = pubfit.fit(rows)
    assert ("ampere-dc", "tgi") in fitted.separated and ("hopper", "tgi") not in fitted.separated
    assert fitted.ratios["tgi/vllm"]["eta_mem"] == pytest.approx(0.5, rel=0.15)
    f, group, note = fitted.factors_for("hopper", "tgi")
    assert group == "hopper/tgi:vllm" and "relative to vllm" in note
    assert f.eta_mem == pytest.approx(TGI.eta_mem, rel=0.2)
    # the engine the family's rows ran, or one no source separated: the family's own factors
    same, g2, n2 = fitted.factors_for("hopper", "vllm")
    assert g2 == "hopper" and "not modelled" in n2 and same.eta_mem == pytest.approx(VLLM.eta_mem, rel=0.15)
    assert fitted.factors_for("hopper", "lightllm")[1] == "hopper"
    d = fitted.as_dict()
    assert d["engines"]["hopper"] == ["vllm"] and "tgi/vllm" in d["engine_ratios"]


def test_no_source_separating_engines_means_no_ratio():
    fitted = pubfit.fit(_rows("S", "a100-80gb", "vllm", VLLM) + _rows("H", "h100-sxm", "tgi", TGI))
    assert fitted.ratios == {} and "not modelled" in fitted.factors_for("ampere-dc", "tgi")[2]


def test_int4_kernel_efficiency_is_fitted_apart_from_fp16_and_only_from_int4_rows():
    truth = VLLM.with_(eta_w4=0.5)
    fp16 = _rows("A", "a100-80gb", "vllm", truth)
    w4 = _rows("B", "a100-80gb", "vllm", truth, quant="gptq")
    f = pubfit.fit_group(fp16 + w4)
    assert f.eta_w4 == pytest.approx(0.5, rel=0.15) and f.eta_mem == pytest.approx(0.7, rel=0.15)
    assert pubfit.fit_group(fp16).eta_w4 == 1.0  # no int4 row: nothing says its kernels differ
    # int4 weights at eta_w4 1 read 4.25/16 of the bytes: the step is faster than fp16's
    assert pubfit.predict(w4[0], VLLM)["tokens_per_s"] > pubfit.predict(fp16[0], VLLM)["tokens_per_s"]


def test_per_layer_cost_grows_with_depth_and_the_pooled_fit_finds_it():
    from servebench.estimate.roofline import kernels_s

    m7, m13 = models.load("llama-2-7b"), models.load("llama-2-13b")
    f = Factors(step_ms=1.0, layer_us=100.0)
    assert kernels_s(m7, f) == pytest.approx(32 * 100e-6) and kernels_s(m13, f) == pytest.approx(40 * 100e-6)
    assert Factors.speed_of_light().layer_us == 0.0
    truth = VLLM.with_(layer_us=100.0)
    rows = _rows("A", "a100-80gb", "vllm", truth) + _rows("B", "h100-sxm", "vllm", truth)
    assert pubfit._pooled(rows).layer_us == 100.0
    assert pubfit._pooled(_rows("A", "a100-80gb", "vllm", VLLM)).layer_us == 0.0


def test_an_offline_batch_the_source_ran_at_once_fits_at_once():
    """TensorRT-LLM's A100 table ran 60 x (128 + 2048) tokens of Llama 2 7B on one 80 GB A100:
    at the default 0.9 memory share the simulator would admit 54 and run a second wave."""
    from servebench.estimate.sim import simulate

    row = next(r for r in pubfit.rows() if r.source == "trtllm-perf-0.6.1" and r.load.requests == 60
               and r.d.hw.key == "a100-80gb-sxm")
    assert 0.9 < row.d.mem_fraction <= 1.0
    assert simulate(row.d, VLLM, row.load)["peak_batch"] == 60
    narrow = Deployment(row.d.model, row.d.hw, row.d.tp, max_num_seqs=60, schedule=row.d.schedule)
    assert simulate(narrow, VLLM, row.load)["peak_batch"] < 60


def test_leave_one_source_out_never_sees_the_held_out_source():
    """Rewriting a held-out source's published figures must not move its own predictions (the
    per-layer grid, eta_w4 and the engine ratios are all fitted on the other sources)."""
    rows = _rows("A", "a100-80gb", "vllm", VLLM) + _rows("B", "h100-sxm", "vllm", VLLM.with_(layer_us=100.0))
    held = _rows("C", "a100-80gb", "vllm", TGI)
    before = {x["row"]: x["predicted"] for x in pubfit.loso(rows + held) if x["source"] == "C"}
    for r in held:
        r.measured = {m: v * 3 for m, v in r.measured.items()}
    after = {x["row"]: x["predicted"] for x in pubfit.loso(rows + held) if x["source"] == "C"}
    assert before == after and len(before) == len(held)


def test_int4_kernel_efficiency_belongs_to_the_engine_whose_source_ran_both_weight_kinds():
    """TGI's slow GPTQ kernels must not be carried to an engine whose int4 rows are all there is
    (issue 19: MLC, ExLlama and llama.cpp rows predicted 2-3x too slow with TGI's eta_w4)."""
    tgi = TGI.with_(eta_w4=0.3)
    rows = (_rows("S", "a100-80gb", "tgi", tgi) + _rows("S", "a100-80gb", "tgi", tgi, quant="gptq")
            + _rows("M", "rtx4090", "mlc-llm", VLLM, quant="gptq"))
    assert pubfit.w4_engines(rows) == frozenset({"tgi"})
    mlc = [r for r in rows if r.source == "M"]
    # TGI's eta_w4, inherited, is not charged to MLC's rows (their eta_mem would pay it: 0.95)
    g = pubfit.fit_group(mlc, Factors(eta_w4=0.3), frozenset({"tgi"}))
    assert g.eta_mem == pytest.approx(VLLM.eta_mem, rel=0.15)
    # a group whose int4 rows are all there is fits them at eta_w4 1, not at an inherited value
    only_w4 = [r for r in rows if r.source == "S" and "gptq" in r.label]
    assert pubfit.fit_group(only_w4, Factors(eta_w4=0.5), frozenset({"tgi"})).eta_w4 == 1.0
    fitted = pubfit.fit(rows)
    mine = fitted.factors_for("ada-geforce", "mlc-llm")[0]
    assert mine.eta_w4 == 1.0 and mine.eta_mem == pytest.approx(VLLM.eta_mem, rel=0.15)
    assert fitted.factors_for("ampere-dc", "tgi")[0].eta_w4 == pytest.approx(0.3, rel=0.25)
    assert fitted.as_dict()["w4_engines"] == ["tgi"]


def test_a_group_faster_than_the_inherited_per_layer_cost_allows_gets_a_smaller_one():
    fast = _rows("G", "rtx4090", "mlc-llm", VLLM.with_(eta_mem=0.8, layer_us=0.0), quant="gptq")
    start = VLLM.with_(layer_us=200.0)
    assert pubfit.fit_group(fast, start, frozenset()).eta_mem == pytest.approx(0.95)  # at its bound
    g = pubfit._lighter(fast, start, frozenset())
    assert g.layer_us < 200.0
    assert all(abs(e) < 0.15 for r in fast for e in pubfit.log_errors(r, g).values())


def test_an_engine_slower_per_layer_than_the_inherited_cost_gets_a_host_launch_cost():
    """TGI 1.x launched every kernel from Python (~500 us per layer in TGI issue #1129 and the
    seed study): its group searches a host launch cost on its own rows, instead of taking that
    host time as slow memory; a group its inherited cost already fits gets none."""
    slow = TGI.with_(eta_mem=0.6, host_us=800.0)  # 26-32 ms of launches over 11-21 ms of GPU time
    rows = _rows("S", "a100-80gb", "tgi", slow) + _rows("T", "a100-80gb", "tgi", slow)
    start = VLLM.with_(layer_us=100.0)
    g = pubfit._engine_group(rows, start, frozenset())
    assert g.host_us == 800.0 and g.layer_us == 100.0
    assert all(abs(e) < 0.1 for r in rows for e in pubfit.log_errors(r, g).values())
    assert pubfit.fit_group(rows, start).eta_mem < 0.5  # without the search: host time read as slow memory
    fits = _rows("V", "a100-80gb", "vllm", start)
    assert pubfit._engine_group(fits, start, frozenset()).host_us == 0.0
    # hidden under the GPU time, a launch cost cannot be told from none: the smallest is kept
    hidden = _rows("W", "a100-80gb", "tgi", TGI.with_(host_us=100.0))
    assert pubfit._launches(hidden, TGI, frozenset(), pubfit.fit_group(hidden, TGI)).host_us == 0.0
