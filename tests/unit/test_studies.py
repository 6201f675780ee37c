"""The two shipped studies as they ran: every platform of the arXiv paper (the RTX 4090's
NCCL_P2P_DISABLE=1 reaching its engines), the SageMaker study's pinned TGI 1.0.3 container and
ShareGPT length mix, and what neither source states marked as assumptions in the plan and the
results."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from servebench.launchers import docker as docker_mod
from servebench.sweep.cli import sweep
from servebench.sweep.config import SweepConfigError, load_config
from servebench.sweep.plan import expand, launch_commands

ROOT = Path(__file__).resolve().parents[2]
ARXIV = ROOT / "studies" / "arxiv-2311.03687.yaml"
HF = ROOT / "studies" / "hf-sagemaker-llama2.yaml"
TGI_103_US_WEST_2 = ("763104351884.dkr.ecr.us-west-2.amazonaws.com/huggingface-pytorch-tgi-inference:"
                     "2.0.1-tgi1.0.3-gpu-py39-cu118-ubuntu20.04")


@pytest.fixture
def no_docker(monkeypatch):
    monkeypatch.setattr(docker_mod.DockerLauncher, "client", property(lambda s: (_ for _ in ()).throw(
        AssertionError("a dry run must not reach the docker daemon"))))


def test_arxiv_study_plans_all_three_platforms():
    plan = expand(load_config(ARXIV)[0])
    per = Counter(g.server.hardware for g in plan.groups)
    assert per == {"a800-80gb": 9, "rtx4090-24gb": 9, "rtx3090-24gb": 9}  # 3 engines x 3 models each
    for hw in per:
        groups = [g for g in plan.groups if g.server.hardware == hw]
        assert {(g.server.engine, g.server.model.rsplit("-", 2)[1]) for g in groups} == {
            (e, m) for e in ("tgi", "vllm", "lightllm") for m in ("7b", "13b", "70b")}
        assert all(g.server.n_gpus == 8 and g.server.launcher == "docker" for g in groups)
    assert len(plan.cells) == 27 * 3  # a burst, 3 repeats
    assert all(c.load.mode == "burst" and c.load.requests == 1000 and c.load.input_tokens == 512 for c in plan.cells)
    assert {c.load.output_tokens for c in plan.cells} == {128}  # the same output length for every engine


def test_nccl_p2p_disable_is_set_for_the_rtx4090_engines_only(no_docker):
    cfg, _ = load_config(ARXIV)
    envs = {g.server.hardware: set() for g in expand(cfg).groups}
    for g in expand(cfg).groups:
        envs[g.server.hardware].add(json.dumps(g.server.env))
    assert envs == {"a800-80gb": {"{}"}, "rtx3090-24gb": {"{}"}, "rtx4090-24gb": {'{"NCCL_P2P_DISABLE": "1"}'}}
    # and it reaches the container: the docker command of each platform's vLLM group
    lines = launch_commands(cfg, "engine=vllm,model=meta-llama/Llama-2-7b-hf")
    cmds = dict(zip(lines[0::2], lines[1::2]))
    assert len(cmds) == 3
    for head, cmd in cmds.items():
        assert cmd.startswith("docker run "), cmd
        assert ("-e NCCL_P2P_DISABLE=1" in cmd) == ("rtx4090" in head), (head, cmd)


def test_sagemaker_study_pins_tgi_103_and_runs_what_the_study_ran():
    cfg, _ = load_config(HF)
    plan = expand(cfg)
    assert len(plan.groups) == 20 and len(plan.cells) == 80  # 6 models x 4 instances - 4 that do not fit
    assert {g.server.launcher_options["image_uri"] for g in plan.groups} == {TGI_103_US_WEST_2}
    assert {g.server.launcher_options["region"] for g in plan.groups} == {"us-west-2"}
    assert {g.server.model for g in plan.groups} == {  # the study's configs.yaml: base models, not -chat
        "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf",
        "TheBloke/Llama-2-7B-GPTQ", "TheBloke/Llama-2-13B-GPTQ", "TheBloke/Llama-2-70B-GPTQ"}
    assert all(c.load.duration_s == 90 and c.load.output_tokens == 50 for c in plan.cells)


def test_sagemaker_study_sends_the_sharegpt_length_mix_from_anywhere(tmp_path, monkeypatch):
    from servebench.load.lengths import parse_length
    from servebench.sweep.plan import check_load

    monkeypatch.chdir(tmp_path)  # the length file is found beside the config, not from the cwd
    cfg, _ = load_config(HF)
    check_load(cfg)
    spec = cfg.load.input_tokens
    assert isinstance(spec, str) and spec.startswith("empirical:") and cfg.load.max_input_tokens == 1024
    dist = parse_length(spec)
    assert len(dist.values) == 65 and min(dist.values) == 6 and max(dist.values) == 846
    import random

    drawn = dist.sample(2000, random.Random(0))
    assert set(drawn) <= set(dist.values) and len(set(drawn)) > 40  # a mix, not one length


def test_assumptions_load_name_their_fields_and_a_stale_one_is_refused(tmp_path):
    lines = load_config(ARXIV)[0].assumption_lines()
    assert any(x.startswith("load.output_tokens = 128: ") for x in lines)
    assert any(x.startswith("load.repeats = 3: ") for x in lines)
    hf = load_config(HF)[0].assumption_lines()
    assert any(x.startswith("load.input_tokens = empirical:") for x in hf)
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nservers: [{engine: vllm}]\nload: {burst: true}\nassumptions:\n"
                 "  - {field: load.output_tokens, why: not given}\n  - {field: load.outptu_tokens, why: typo}\n")
    with pytest.raises(SweepConfigError, match=r"s\.yaml: assumptions\.1\.field \(line 6\): "
                                               r"'load\.outptu_tokens' is not a field of this config"):
        load_config(f)
    f.write_text("name: s\nservers: [{engine: vllm}]\nassumptions:\n  - {field: load.repeats}\n")
    with pytest.raises(SweepConfigError, match=r"assumptions\.0\.why"):
        load_config(f)


@pytest.mark.parametrize("study", [ARXIV, HF], ids=lambda p: p.stem)
def test_dry_run_prints_each_cells_tokens_warmup_duration_and_the_assumptions(study, no_docker, tmp_path):
    r = CliRunner().invoke(sweep, [str(study), "--dry-run", "--results-dir", str(tmp_path)],
                           env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    out = r.output
    cfg = load_config(study)[0]
    rows = [ln for ln in out.splitlines() if "gNN-" in ln]
    assert len(rows) == len({(c.load.key, c.load.repeat) for c in expand(cfg).cells})
    for row in rows:
        assert "2 request(s), not measured" in row  # warm-up
        if study == HF:
            assert "empirical:" in row and "(at most 1024)" in row and "| 50 " in row.replace("│", "|")
            assert "90 s (at most 100000 requests)" in row
        else:
            assert "| 512 " in row.replace("│", "|") and "| 128 " in row.replace("│", "|")
            assert "1000 requests released at once" in row
    assert "assumed (not stated by the study; servebench's choice):" in out
    for line in cfg.assumption_lines():
        assert line.split(":")[0] in out
    assert not any(tmp_path.iterdir())  # nothing written


def test_assumptions_reach_the_index_and_the_sweep_tables(tmp_path):
    from servebench.sweep import console
    from servebench.sweep.cli import _open_index
    from servebench.sweep.index import SweepIndex

    cfg, text = load_config(ARXIV)
    _open_index(tmp_path / "s", False, "sweep", cfg, expand(cfg), text)
    kept = SweepIndex.load(tmp_path / "s").data["assumptions"]
    assert kept == cfg.assumption_lines() and kept
    md = console.assumed_markdown(kept)
    assert md.startswith("\n### Assumptions") and md.count("\n- ") == len(kept)
    assert console.assumed_markdown([]) == ""
