"""`sweep --dry-run --show-commands`: every group's exact launch, nothing started."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from servebench.launchers import docker as docker_mod
from servebench.sweep.cli import sweep

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_show_commands_prints_each_groups_launch(monkeypatch, tmp_path):
    monkeypatch.setattr(docker_mod.DockerLauncher, "client", property(lambda s: (_ for _ in ()).throw(
        AssertionError("a dry run must not reach the docker daemon"))))
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nresults_dir: " + str(tmp_path) + "\nservers:\n"
                 "  - {engine: vllm, model: meta-llama/Llama-2-7b-hf, launcher: docker, gpus: [0, 1],"
                 " env: {NCCL_P2P_DISABLE: '1'}}\n"
                 "  - {engine: tgi, model: meta-llama/Llama-2-7b-hf, launcher: sagemaker, instance_type: ml.g5.2xlarge,"
                 " gpu_count: 1, launcher_options: {region: us-west-2}}\n")
    r = CliRunner().invoke(sweep, [str(f), "--dry-run", "--show-commands"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "# g00 vllm/meta-llama/Llama-2-7b-hf" and lines[2] == "# g01 tgi/meta-llama/Llama-2-7b-hf/ml.g5.2xlarge"
    assert lines[1].startswith("docker run --rm --name servebench-vllm-") and "-e NCCL_P2P_DISABLE=1" in lines[1]
    assert "--tensor-parallel-size 2" in lines[1]
    # the study's SageMaker groups need a role: said per group, in one line, before anything is paid for
    assert lines[3] == ("(cannot launch: sagemaker deploy needs --role-arn (run: --launcher-opt role_arn=...; "
                        "sweep: launcher_options.role_arn) or an existing endpoint name)")
    assert not (tmp_path / "s").exists()  # no sweep directory: nothing ran


def test_sagemaker_study_pins_the_studys_container_and_limits():
    import json

    from servebench.launchers.dryrun import request_of
    from servebench.launchers.sagemaker import SageMakerLauncher
    from servebench.sweep.config import load_config
    from servebench.sweep.plan import expand, run_config

    cfg, _ = load_config(STUDIES / "hf-sagemaker-llama2.yaml")
    g = expand(cfg).groups[0]
    req = request_of(run_config(cfg, g.server, g.cells[0].load, Path("r"), g.id))
    req.options["role_arn"] = "arn:aws:iam::123456789012:role/r"
    plan = json.loads(SageMakerLauncher(progress=lambda m: None).dry_run(req))
    c = plan["model"]["PrimaryContainer"]
    assert c["Image"] == ("763104351884.dkr.ecr.us-west-2.amazonaws.com/huggingface-pytorch-tgi-inference:"
                          "2.0.1-tgi1.0.3-gpu-py39-cu118-ubuntu20.04")  # TGI 1.0.3, as the study ran
    # 1.0.3's names for the study's limits, shown in full (limits are no secrets)
    assert c["Environment"]["MAX_INPUT_LENGTH"] == "1024" and c["Environment"]["MAX_TOTAL_TOKENS"] == "2048"
    assert plan["region"] == "us-west-2"
