"""Tokenizers of hub ids: from the cache, else downloaded only when the user holds a token, the
hub is not switched off and it answers; never a network call otherwise (no network here:
the connect and transformers' loader are faked at their boundary)."""

from __future__ import annotations

import socket

import pytest
import transformers

from servebench.engines import hub
from servebench.load.prompts import WorkloadError, load_tokenizer


@pytest.fixture
def loader(monkeypatch, tmp_path):
    for v in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    calls: list[dict] = []

    def from_pretrained(name, **kw):
        calls.append({"name": name, **kw})
        if kw.get("local_files_only"):
            raise OSError(f"We couldn't connect to 'https://huggingface.co' to load the files of {name}")
        return "TOKENIZER"

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    connects: list[tuple] = []

    def connect(addr, timeout=None):
        connects.append(addr)
        if addr[0] == "down.example":
            raise OSError(101, "Network is unreachable")

        class Sock:
            def close(self):
                pass
        return Sock()

    monkeypatch.setattr(socket, "create_connection", connect)
    return calls, connects


def test_no_token_no_download_and_the_error_says_how(loader):
    calls, connects = loader
    with pytest.raises(WorkloadError, match=r"not downloaded: no hub token \(set HF_TOKEN or run `huggingface-cli login`"):
        load_tokenizer("meta-llama/Llama-2-7b-hf")
    assert [c.get("local_files_only") for c in calls] == [True] and connects == []


def test_token_env_downloads(loader, monkeypatch):
    calls, connects = loader
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert load_tokenizer("meta-llama/Llama-2-7b-hf") == "TOKENIZER"
    assert calls[-1] == {"name": "meta-llama/Llama-2-7b-hf", "token": "hf_x"} and connects == [("huggingface.co", 443)]


def test_token_file_of_huggingface_cli_login_downloads(loader, tmp_path):
    calls, _ = loader
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_file\n")
    assert load_tokenizer("meta-llama/Llama-2-7b-hf") == "TOKENIZER" and calls[-1]["token"] == "hf_file"


def test_offline_switch_and_unreachable_hub_stay_offline(loader, monkeypatch):
    calls, connects = loader
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkloadError, match="not downloaded: HF_HUB_OFFLINE is set"):
        load_tokenizer("meta-llama/Llama-2-7b-hf")
    assert connects == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://down.example")
    with pytest.raises(WorkloadError, match=r"not downloaded: the hub \(down.example\) is unreachable: Network is unreachable"):
        load_tokenizer("meta-llama/Llama-2-7b-hf")
    assert all(c.get("local_files_only") for c in calls)  # never a download attempt
