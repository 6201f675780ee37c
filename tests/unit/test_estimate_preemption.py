"""vLLM's admission in the simulator (estimate/sim.py, Deployment.admit "prompt"): admitted on
the prompt's KV blocks, a sequence takes a block each time its last one fills, and when the
pool has none the last admitted is preempted and later prefilled again (recompute)."""

from __future__ import annotations

import pytest

from servebench.estimate import catalog, models, pubrows, sim
from servebench.estimate.roofline import ADMITS, Deployment, Factors, capacity


def _dep(**kw) -> Deployment:
    return Deployment(models.load("llama-2-7b"), catalog.lookup("a10g"), 1, **kw)


def _run(d: Deployment, load: sim.Load, monkeypatch) -> tuple[dict, sim._State]:
    """The summary and the simulator's state when it ended (for the pool's bookkeeping)."""
    seen = {}
    real = sim._result

    def keep(s, *a):
        seen["s"] = s
        return real(s, *a)

    monkeypatch.setattr(sim, "_result", keep)
    return sim.simulate(d, Factors(), load, detail=True), seen["s"]


BURST = sim.Load("burst", requests=200, n_in=256, n_out=256)


def test_a_pool_bound_burst_admits_more_and_preempts_the_last_admitted(monkeypatch):
    small = dict(mem_fraction=0.705)  # a few thousand tokens of KV: ~8 requests of 512
    res, _ = _run(_dep(**small), BURST, monkeypatch)
    pre, s = _run(_dep(admit="prompt", **small), BURST, monkeypatch)
    assert res["preemptions"] == 0 and pre["preemptions"] > 0
    assert pre["completed"] == res["completed"] == 200
    # admitted on 256 tokens instead of 512: about twice the batch before anyone grows
    assert pre["peak_batch"] >= 1.8 * res["peak_batch"]
    reqs = pre["requests"]
    # first come, never a victim: the first request runs straight through
    assert reqs[0].made == 0 and any(r.made > 0 for r in reqs)
    # a victim keeps the time of its first token; its TPOT carries the wait and the recompute
    hit = [r for r in reqs if r.made > 0]
    assert all(r.arrive <= r.first < r.done for r in hit)
    # every block back in the pool and no KV left counted when the last request is done
    assert s.free_blocks == capacity(_dep(**small))["kv_tokens"] // sim.BLOCK
    assert s.ctx == 0 and s.running == 0 and not s.prefilling and not s.waiting


@pytest.mark.parametrize("schedule,chunk", [("mixed", None), ("mixed", 256), ("separate", None)])
def test_recompute_is_paid_as_prefill_and_a_wide_pool_changes_nothing(schedule, chunk, monkeypatch):
    wide = sim.Load("closed", users=8, requests=48, n_in=200, n_out=100)
    a = sim.simulate(_dep(schedule=schedule), Factors(), wide, chunk=chunk)
    b = sim.simulate(_dep(schedule=schedule, admit="prompt"), Factors(), wide, chunk=chunk)
    assert b["preemptions"] == 0 and a == b  # nothing outgrows the pool: the two rules agree
    # a pool that is outgrown: the recomputed prompts are prefill work the reserving engine skips
    prefilled = {}
    for admit in ("reserve", "prompt"):
        toks = []
        real = sim.StepCost.step

        def count(self, ctx, tokens, attn, seqs=0):
            toks.append(tokens)
            return real(self, ctx, tokens, attn, seqs)

        monkeypatch.setattr(sim.StepCost, "step", count)
        p = sim.simulate(_dep(schedule=schedule, admit=admit, mem_fraction=0.705), Factors(), BURST, chunk=chunk)
        monkeypatch.undo()
        prefilled[admit] = (sum(toks), p)
    decode_tokens = 200 * 255
    assert prefilled["reserve"][0] == 200 * 256 + decode_tokens
    assert prefilled["prompt"][0] > prefilled["reserve"][0]
    assert prefilled["prompt"][1]["preemptions"] > 0


def test_short_outputs_on_a_small_pool_preempt_and_still_make_every_token(monkeypatch):
    mix = sim.Load("burst", requests=120, n_in=tuple(range(17, 900, 37)), n_out=tuple(range(2, 700, 29)))
    p, s = _run(_dep(admit="prompt", mem_fraction=0.705), mix, monkeypatch)
    assert p["completed"] == 120 and p["preemptions"] > 0
    assert s.free_blocks == capacity(_dep(mem_fraction=0.705))["kv_tokens"] // sim.BLOCK and s.ctx == 0
    assert all(r.made < r.n_out for r in p["requests"])


def test_vllm_preempts_and_the_others_reserve():
    assert ADMITS == {"vllm": "prompt"}
    got = {r.engine: r.d.admit for r in pubrows.rows()}
    assert got["vllm"] == "prompt" and got["tgi"] == "reserve" and got["trtllm"] == "reserve"


def test_the_cli_says_how_each_engine_admits_and_counts_vllms_preemptions():
    import json

    from click.testing import CliRunner

    from servebench.estimate.cli import estimate

    def run(engine, *fmt):
        r = CliRunner().invoke(estimate, ["--model", "llama-2-7b", "--gpu", "a10g", "--engine", engine, "--load", "burst",
                                          "--concurrency", "4,300", "--input-tokens", "256", "--output-tokens", "256", *fmt])
        assert r.exit_code == 0, r.output
        return json.loads(r.output) if fmt else r.output

    v, t = run("vllm", "--json"), run("tgi", "--json")
    assert v["admission"].startswith("on the prompt") and t["admission"] == "prompt + output reserved"
    assert v["levels"][0]["preemptions"] == 0 and v["levels"][1]["preemptions"] > 0
    assert t["levels"][1]["preemptions"] == 0
    text = " ".join(run("vllm").split())
    assert f"vllm preempts requests (recomputed later, their time included): {v['levels'][1]['preemptions']:,} at 300" in text
    assert "preempts" not in run("tgi")


def test_a_request_larger_than_the_pool_beyond_the_watermark_does_not_fit():
    d = _dep(admit="prompt", mem_fraction=0.705)
    blocks = capacity(d)["kv_tokens"] // sim.BLOCK
    room = (blocks - int(0.01 * blocks)) * sim.BLOCK  # vLLM admits nothing into its last 1 %
    ok = sim.simulate(d, Factors(), sim.Load("burst", requests=2, n_in=room - 64, n_out=64))
    assert ok["fits"] and ok["completed"] == 2
    assert int(0.01 * blocks) >= 1
    # one block more; the second, longest request decides, not the first
    over = sim.simulate(d, Factors(), sim.Load("burst", requests=2, n_in=(100, room - 64 + sim.BLOCK), n_out=64))
    assert not over["fits"] and f"one request of {room + sim.BLOCK} tokens" in over["why"]
    # reserving engines have no watermark: the same request fits them
    wide = sim.simulate(_dep(mem_fraction=0.705), Factors(), sim.Load("burst", requests=1, n_in=room - 64 + sim.BLOCK, n_out=64))
    assert wide["fits"] and wide["completed"] == 1
