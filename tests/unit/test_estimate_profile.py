"""`servebench profile` on the CPU with the tiny preset (random weights, torch from the venv)."""

from __future__ import annotations

import json

import pytest

from servebench.estimate import catalog, models
from servebench.estimate.forward import floors, run_profile
from servebench.estimate.profile import chart


@pytest.fixture(scope="module")
def decode_result():
    name, cfg = models.find_config("tiny")
    # the floors need a hardware row; a fixed one keeps this test off the host benchmark
    return run_profile(cfg, name, "decode", batch=2, seq=32, repeats=2, hw=catalog.lookup("a10g"))


def test_every_module_is_timed_and_shares_add_up(decode_result):
    rows = {r["module"]: r for r in decode_result["modules"]}
    for m in ("embedding", "decoder layers", "attention", "q_proj", "gate_proj", "down_proj", "SiLU",
              "RMSNorm (2 per layer)", "LM head"):
        assert rows[m]["ms"] > 0, m
    assert rows["decoder layers"]["calls"] == 2 and rows["q_proj"]["calls"] == 2 and rows["RMSNorm (2 per layer)"]["calls"] == 4
    top = [r for r in decode_result["modules"] if r["depth"] == 0]
    assert 0.5 < sum(r["share"] for r in top) <= 1.0001  # the rest: the model's own glue code
    children = ["attention", "MLP", "RMSNorm (2 per layer)", "residual adds (self)"]
    assert sum(rows[c]["ms"] for c in children) == pytest.approx(rows["decoder layers"]["ms"])


def test_operators_and_floors(decode_result):
    ops = decode_result["operators"]
    assert ops and all(o["self_ms"] >= 0 for o in ops)
    assert any("mm" in o["op"] or "linear" in o["op"] or "addmm" in o["op"] for o in ops)
    assert decode_result["floor_ms"] > 0 and 0 < decode_result["efficiency"] < 1


def test_module_floor_is_weight_bytes_over_bandwidth_in_decode():
    shape = models.load("llama-2-7b")
    fl = floors(shape, catalog.lookup("a10g"), "decode", 1, 512, 2)
    q = fl["    q_proj"]
    assert q["bound"] == "memory"
    assert q["floor_ms"] == pytest.approx(32 * (4096 * 4096 * 2 + 2 * 4096 * 2) / 600e9 * 1e3)
    big = floors(shape, catalog.lookup("a10g"), "prefill", 8, 2048, 2)
    assert big["    gate_proj"]["bound"] == "compute"


def test_prefill_profile_and_chart(tmp_path):
    name, cfg = models.find_config("tiny")
    r = run_profile(cfg, name, "prefill", batch=1, seq=64, repeats=1, hw=catalog.lookup("a10g"))
    assert r["phase"] == "prefill" and r["forward_ms"] > 0
    png = chart(r, tmp_path / "p.png")
    assert png.stat().st_size > 1000
    json.dumps(r)  # serializable as written to profile.json


def test_profile_refuses_a_model_that_cannot_fit_with_a_hint():
    from click.testing import CliRunner

    from servebench.cli import main

    r = CliRunner().invoke(main, ["profile", "--model", "llama-2-70b", "--phase", "decode"])
    assert r.exit_code == 2
    assert "error: meta-llama/Llama-2-70b-hf needs 257.0 GiB of weights" in r.output and "--layers" in r.output


def test_profile_command_writes_json_and_chart(tmp_path):
    from click.testing import CliRunner

    from servebench.cli import main

    out = tmp_path / "prof"
    r = CliRunner().invoke(main, ["profile", "--model", "tiny", "--phase", "decode", "--batch", "1", "--seq", "16",
                                  "--repeats", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "profile.json").read_text())
    assert data["phase"] == "decode" and data["modules"] and (out / "profile.png").stat().st_size > 1000
    assert "Time per module" in r.output and str(out) in r.output.strip().splitlines()[-1]
