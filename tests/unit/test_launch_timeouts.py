"""Readiness waits sized for the model's weights unless the user gives one."""

from __future__ import annotations

import pytest

from servebench.launchers.base import LaunchRequest
from servebench.launchers.timeouts import BASE_S, S_PER_GB, option_s, ready_timeout, weights_gb


@pytest.mark.parametrize("model,gb", [
    ("meta-llama/Llama-2-70b-hf", 140), ("meta-llama/Llama-2-7b-chat-hf", 14), ("Qwen/Qwen2.5-0.5B-Instruct", 1),
    ("TheBloke/Llama-2-70B-Chat-GPTQ", 38.5), ("gpt2", None), ("bert-base-uncased", None)])
def test_weights_from_hub_ids(model, gb):
    assert weights_gb(model) == (pytest.approx(gb) if gb else None)


def test_weights_from_a_local_dir(tmp_path):
    (tmp_path / "model-00001.safetensors").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 5_000_000)  # not weights
    assert weights_gb(str(tmp_path)) == pytest.approx(0.003)


def test_given_timeout_wins_else_sized():
    assert ready_timeout(LaunchRequest(engine="vllm", model="meta-llama/Llama-2-70b-hf", ready_timeout_s=42)) == 42
    assert ready_timeout(LaunchRequest(engine="vllm", model="meta-llama/Llama-2-70b-hf")) == BASE_S + 140 * S_PER_GB
    assert ready_timeout(LaunchRequest(engine="vllm", model="org/unknown")) == BASE_S


def test_phase_options_are_numbers():
    req = LaunchRequest(engine="tgi", model="m", options={"probe_timeout_s": "900", "bad": "soon"})
    assert option_s(req, "probe_timeout_s", 1) == 900 and option_s(req, "missing", 7) == 7
    with pytest.raises(ValueError, match="launcher option bad='soon' is not a number of seconds"):
        option_s(req, "bad", 1)
