"""Server environment variables: from `--env` / a sweep group's `env:` to the LaunchRequest
every launcher builds its container or process environment from."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from servebench.config import RunConfig
from servebench.engines.specs import load_spec
from servebench.launchers.base import LaunchRequest
from servebench.launchers.process import ProcessLauncher
from servebench.run.session import ServerSession
from servebench.sweep.config import SweepConfigError, load_config
from servebench.sweep.plan import expand, run_config

STUDY = Path(__file__).resolve().parents[2] / "studies" / "arxiv-2311.03687.yaml"


def test_sweep_group_env_reaches_the_launch_request(tmp_path):
    f = tmp_path / "s.yaml"
    # named: two servers that differ only in env would share a label (refused, sweep/plan.py)
    f.write_text("name: s\nservers:\n  - {name: p2p-off, engine: vllm, model: m, launcher: docker, env: {NCCL_P2P_DISABLE: 1}}\n"
                 "  - {name: p2p-on, engine: vllm, model: m, launcher: docker}\n")
    cfg, _ = load_config(f)
    plan = expand(cfg)
    reqs = []
    for g in plan.groups:
        rc = run_config(cfg, g.server, g.cells[0].load, tmp_path, "x")
        reqs.append(ServerSession(rc, load_spec("vllm"), "openai-completions", None, tmp_path, launcher=object())._request())
    assert [r.env for r in reqs] == [{"NCCL_P2P_DISABLE": "1"}, {}]


def test_bad_env_names_are_one_line_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nservers:\n  - {engine: vllm, env: {NCCL-P2P: 1}}\n")
    # the config is checked as it is read: the file, the server, the field and its line
    with pytest.raises(SweepConfigError, match=r"s\.yaml: servers\[0\]: env \(line 3\): not an environment variable name: 'NCCL-P2P'"):
        expand(load_config(f)[0])
    with pytest.raises(ValidationError, match="not an environment variable name"):
        RunConfig(env={"1X": "y"})


def test_env_reaches_the_process_launcher():
    req = LaunchRequest(engine="vllm", model="m", env={"NCCL_P2P_DISABLE": "1"})
    full, chosen = ProcessLauncher().env(load_spec("vllm"), req)
    assert full["NCCL_P2P_DISABLE"] == chosen["NCCL_P2P_DISABLE"] == "1"


def test_arxiv_three_platform_sweep_in_docs_sets_nccl_p2p_disable_on_the_rtx4090(tmp_path):
    """docs/ray.md's three-host version of the study, as a user copies it."""
    text = (STUDY.parents[1] / "docs" / "ray.md").read_text()
    block = text.split("# arxiv-2311.03687-3hosts.yaml", 1)[1].split("```", 1)[0]
    f = tmp_path / "arxiv-2311.03687-3hosts.yaml"
    f.write_text("#" + block)  # the comment line the split cut
    envs = {}
    for g in expand(load_config(f)[0]).groups:
        envs.setdefault(g.server.hardware, []).append(g.server.env)
    assert set(envs) == {"a800-80gb", "rtx4090-24gb", "rtx3090-24gb"}
    assert all(e == {"NCCL_P2P_DISABLE": "1"} for e in envs["rtx4090-24gb"])
    assert all(e == {} for e in envs["a800-80gb"] + envs["rtx3090-24gb"])
    study = {g.server.label: g.server.env for g in expand(load_config(STUDY)[0]).groups}  # the shipped file: the same
    assert {label: env for label, env in study.items() if env} == {
        label: {"NCCL_P2P_DISABLE": "1"} for label in study if "rtx4090" in label} and len(study) == 27
