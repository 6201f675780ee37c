"""Engine specs: every shipped spec is valid and matches the adapters; bad user specs fail in
one line."""

from __future__ import annotations

import pytest
import yaml

from servebench.adapters import ADAPTERS
from servebench.engines.specs import TEMPLATE_KEYS, SpecError, load_spec, render_command, spec_names

ENGINES = ["lightllm", "sglang", "tgi", "vllm"]  # with docker images; CPU-only process engines below
LOCAL_ENGINES = ["llamacpp", "transformers"]
VALUES = {"python": "PY", "model": "MODEL", "served_model_name": "NAME", "host": "HOST", "port": 1234}


def test_shipped_specs():
    assert spec_names() == sorted(ENGINES + LOCAL_ENGINES + ["openai"])
    generic = load_spec("openai")  # nothing to launch: endpoints only
    assert generic.process is None and generic.docker is None and generic.request_extra == {}


def test_every_spec_has_an_adapter_and_every_adapter_a_spec():
    specs = [load_spec(n) for n in spec_names()]
    spoken = {a for s in specs for a in s.adapters}
    assert spoken == set(ADAPTERS)
    for s in specs:
        assert s.adapter in ADAPTERS
        # a spec never claims to force output length where its adapter cannot; it may say it
        # cannot where the adapter could (the engine rejects ignore_eos: transformers serve)
        assert s.output_length.forced <= ADAPTERS[s.adapter].forces_length, s.name


@pytest.mark.parametrize("name", ENGINES)
def test_templates_render(name):
    spec = load_spec(name)
    for section in (spec.process, spec.docker):
        argv = render_command(spec, section, VALUES, gpus=[2, 3])
        assert "MODEL" in argv and not any("{" in a for a in argv)
        assert argv[argv.index(spec.flags.gpus) + 1] == "2"
    proc = render_command(spec, spec.process, VALUES)
    assert proc[proc.index("1234") - 1] == "--port" and "HOST" in proc
    assert spec.passthrough_env[0] == "HF_TOKEN"
    assert spec.docker.shm_size or spec.docker.ipc_mode  # NCCL/PyTorch need shared memory


def test_issue_facts():
    gpu = {n: load_spec(n).flags.gpus for n in ENGINES}
    assert gpu == {"tgi": "--num-shard", "vllm": "--tensor-parallel-size", "lightllm": "--tp", "sglang": "--tp"}
    images = {n: load_spec(n).docker.image for n in ENGINES}
    assert images == {"tgi": "ghcr.io/huggingface/text-generation-inference", "vllm": "vllm/vllm-openai",
                      "lightllm": "ghcr.io/modeltc/lightllm", "sglang": "lmsysorg/sglang"}
    assert load_spec("tgi").sagemaker is not None


def test_optional_flags():
    tgi = load_spec("tgi")
    argv = render_command(tgi, tgi.docker, VALUES, options={"quantize": "gptq", "max_input_tokens": 1024,
                                                           "max_total_tokens": 2048, "served_model_name": "x"})
    assert argv == ["--model-id", "MODEL", "--quantize", "gptq", "--max-input-tokens", "1024",
                    "--max-total-tokens", "2048"]
    vllm = load_spec("vllm")
    with pytest.raises(SpecError, match="vllm has no flag for max_input_tokens"):
        render_command(vllm, vllm.process, VALUES, options={"max_input_tokens": 10})
    # process defaults (CPU-sized) apply only where no value was given, and only without GPUs:
    # on a GPU a 1024-token cap would fail every longer prompt at the server
    assert render_command(vllm, vllm.process, VALUES)[-2:] == ["--max-model-len", "1024"]
    assert "--max-model-len" not in render_command(vllm, vllm.process, VALUES, gpus=[0])
    assert render_command(vllm, vllm.docker, VALUES)[-2:] == ["--port", "8000"]


def user_spec(tmp_path, **over):
    base = {"name": "mine", "adapter": "openai-chat", "adapters": ["openai-chat"],
            "output_length": {"forced": True, "how": "ignore_eos"},
            "process": {"command": ["my-server"], "args": ["--port", "{port}"]}}
    base.update(over)
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(base))
    return p


def test_user_spec_file(tmp_path):
    s = load_spec(user_spec(tmp_path))
    assert s.name == "mine" and s.source.endswith("mine.yaml") and s.health_path == "/health"
    with pytest.raises(SpecError, match="has no flag for running on several GPUs"):
        render_command(s, s.process, VALUES, gpus=[0, 1])
    assert render_command(s, s.process, VALUES, gpus=[0]) == ["my-server", "--port", "1234"]


def test_metric_names_are_telemetrys_common_names():
    from servebench.telemetry.prom import COMMON

    for n in ENGINES:
        m = load_spec(n).metrics
        assert set(m) <= set(COMMON) and {"running", "waiting"} <= set(m) and all(m.values()), n


@pytest.mark.parametrize("over, msg", [
    ({"adapter": "tgi"}, r"default adapter 'tgi' is not in adapters"),
    ({"request_extra": {"tgi": {"top_k": 1}}}, r"request_extra names adapters not in adapters: tgi"),
    ({"output_length": None}, r"output_length: Input should be"),
    ({"healthpath": "/h"}, r"healthpath: Extra inputs are not permitted"),
])
def test_bad_user_spec_is_one_line(tmp_path, over, msg):
    with pytest.raises(SpecError, match=msg) as ei:
        load_spec(user_spec(tmp_path, **over))
    assert "\n" not in str(ei.value)


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match=r"^unknown engine 'nope' \(known: lightllm, llamacpp, openai, sglang, tgi, transformers, vllm"):
        load_spec("nope")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="is not valid YAML") as ei:
        load_spec(bad)
    assert "\n" not in str(ei.value)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(bad)
    s = load_spec(user_spec(tmp_path, process={"command": ["x", "{nope}"]}))
    with pytest.raises(SpecError, match="bad template"):
        render_command(s, s.process, VALUES)


def test_template_keys_documented():
    # every key a shipped spec uses is one the launchers fill in
    import re
    for n in ENGINES:
        text = open(load_spec(n).source).read()
        assert set(re.findall(r"\{(\w+)\}", text)) - {"region"} <= set(TEMPLATE_KEYS)


def test_lightllm_hub_id_resolves_to_its_cached_snapshot_for_the_process_launcher(tmp_path, monkeypatch):
    from servebench.engines.specs import resolve_local_model
    from servebench.launchers.base import LaunchRequest
    from servebench.launchers.process import ProcessLauncher

    spec = load_spec("lightllm")
    assert spec.model_dir_only and not load_spec("vllm").model_dir_only
    hub = "meta-llama/Llama-2-7b-hf"
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    req = LaunchRequest(engine="lightllm", model=hub, gpus=[0])
    with pytest.raises(SpecError, match=r"huggingface-cli download meta-llama/Llama-2-7b-hf"):
        ProcessLauncher(python="PY").command(spec, req, 1234)
    snap = tmp_path / "hub" / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    argv = ProcessLauncher(python="PY").command(spec, req, 1234)
    assert argv[argv.index("--model_dir") + 1] == str(snap)
    assert resolve_local_model(spec, str(snap), tmp_path) is None  # a directory is passed as it is
    assert resolve_local_model(load_spec("vllm"), hub, tmp_path / "empty") is None  # vLLM downloads itself
