"""Terms issue 19 added to the step model: the link without peer access (staged through host
memory), the per-request latency before a request reaches the engine, and where the
per-sequence cost is charged."""

from __future__ import annotations

import pytest

from servebench.estimate import catalog, models
from servebench.estimate.roofline import STAGED_ALPHA, STAGED_BW, Deployment, Factors, decode_step, link, p2p, prefill, serve
from servebench.estimate.sim import Load, StepCost, simulate

F = Factors(eta_mem=0.5, eta_compute=0.5, step_ms=1.0, seq_ms=0.0)


def _comm_ms(d: Deployment, batch: int = 64) -> float:
    return decode_step(d, batch, 600, F)["comm_s"] * 1e3


def test_p2p_off_all_reduce_is_slower_than_nvlink_and_p2p_at_tp8(monkeypatch):
    monkeypatch.delenv("NCCL_P2P_DISABLE", raising=False)
    m = models.load("llama-2-7b")
    g4090, a800 = catalog.lookup("rtx4090"), catalog.lookup("a800")
    staged, peer = Deployment(m, g4090, 8), Deployment(m, g4090, 8, p2p=True)
    assert not p2p(staged) and p2p(peer) and p2p(Deployment(m, a800, 8))
    # 64 all-reduces of 64 x 4096 x 2 bytes: staging doubles both latency and transfer time
    assert _comm_ms(staged) == pytest.approx(_comm_ms(peer) * 2, rel=1e-9)
    assert _comm_ms(Deployment(m, a800, 8)) < _comm_ms(peer) / 3  # NVLink: 6x the bandwidth, a third of the latency
    alpha, bw = link(staged, F)
    alpha_p, bw_p = link(peer, F)
    assert alpha == pytest.approx(alpha_p * STAGED_ALPHA) and bw == pytest.approx(bw_p * STAGED_BW)
    # the simulator's step uses the same link
    sc, sp = StepCost.of(staged, F), StepCost.of(peer, F)
    assert sc.comm0 == pytest.approx(sp.comm0 * STAGED_ALPHA) and sc.comm_tok == pytest.approx(sp.comm_tok / STAGED_BW)
    assert Deployment(m, g4090, 1).tp == 1 and _comm_ms(Deployment(m, g4090, 1)) == 0.0


def test_nccl_p2p_disable_env_stages_a_p2p_capable_gpu_unless_the_deployment_says(monkeypatch):
    m = models.load("llama-2-7b")
    g = catalog.lookup("rtx3090")  # PCIe, peer access not refused by the catalog
    before = _comm_ms(Deployment(m, g, 8))
    monkeypatch.setenv("NCCL_P2P_DISABLE", "1")
    assert not p2p(Deployment(m, g, 8))
    assert _comm_ms(Deployment(m, g, 8)) == pytest.approx(before * 2)
    assert p2p(Deployment(m, g, 8, p2p=True))  # an explicit option wins over the env


def test_arxiv_platforms_rank_3090_above_4090_through_the_link_only(monkeypatch):
    """Same efficiencies for both cards: the 4090's faster memory and tensor cores lose to its
    staged all-reduces at TP8 under a burst, and win when it is given peer access."""
    monkeypatch.delenv("NCCL_P2P_DISABLE", raising=False)
    m = models.load("llama-2-7b")
    load = Load(mode="burst", requests=400, n_in=512, n_out=128)

    def tok_s(gpu, **kw):
        return simulate(Deployment(m, catalog.lookup(gpu), 8, schedule="separate", **kw), F, load)["output_tok_s"]

    assert tok_s("rtx3090") > tok_s("rtx4090")
    assert tok_s("rtx4090", p2p=True) > tok_s("rtx3090")


def test_req_ms_adds_to_ttft_only_not_to_other_requests_steps():
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"))
    load = Load(mode="closed", users=8, requests=64, n_in=256, n_out=64, stagger_s=0.5)
    a, b = simulate(d, F, load), simulate(d, F.with_(req_ms=20.0), load)
    # a closed-loop user's next request now lands mid-step instead of at a step's end, so it
    # may also wait for the step in progress: at most one more step
    assert 20.0 <= b["ttft_ms"] - a["ttft_ms"] <= 20.0 + a["tpot_ms"] * 1.05
    assert b["tpot_ms"] == pytest.approx(a["tpot_ms"], rel=0.05)
    s0, s1 = serve(d, 1, 256, 64, F), serve(d, 1, 256, 64, F.with_(req_ms=20.0))
    assert s1["ttft_ms"] - s0["ttft_ms"] == pytest.approx(20.0) and s1["tpot_ms"] == pytest.approx(s0["tpot_ms"])
    assert Factors.speed_of_light().req_ms == 0.0


def test_prefill_pays_the_per_sequence_cost_once_per_prompt_not_per_token():
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"))
    f0, f1 = F.with_(seq_ms=0.0), F.with_(seq_ms=0.5)
    one = prefill(d, 2048, 2048, f1)["s"] - prefill(d, 2048, 2048, f0)["s"]
    four = prefill(d, 4 * 512, 512, f1)["s"] - prefill(d, 4 * 512, 512, f0)["s"]
    assert one == pytest.approx(0.5e-3) and four == pytest.approx(4 * 0.5e-3)


def test_p2p_disabled_on_an_nvlink_gpu_stages_over_pcie_not_nvlink(monkeypatch):
    from servebench.estimate.roofline import HOST_LINK_GBS, link_note

    m = models.load("llama-2-7b")
    a800 = catalog.lookup("a800")
    nv_ms = _comm_ms(Deployment(m, a800, 8))
    monkeypatch.setenv("NCCL_P2P_DISABLE", "1")
    staged = Deployment(m, a800, 8)
    assert link(staged, F)[1] == pytest.approx(F.eta_link * HOST_LINK_GBS * 1e9 * STAGED_BW)
    assert "NCCL_P2P_DISABLE=1" in link_note(staged) and "PCIe" in link_note(staged)
    assert "peer access" in link_note(Deployment(m, a800, 8, p2p=True)) and link_note(Deployment(m, a800, 1)) is None
    assert _comm_ms(staged) > 5 * nv_ms  # the env is read when the step is costed
