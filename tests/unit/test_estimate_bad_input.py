"""Bad input to `servebench estimate` and `servebench profile`: one `error:` line and exit 2,
before any simulation or forward pass (docs/faults.md). The work itself is replaced by a stub
that fails the test, so a check that comes too late fails fast instead of running for minutes."""

from __future__ import annotations


import pytest
from click.testing import CliRunner

from servebench.cli import main


def _no_work(*a, **k):
    raise AssertionError("the work started: the bad input was not refused first")


@pytest.fixture
def no_sim(monkeypatch):
    from servebench.estimate import predict, trace

    monkeypatch.setattr(predict, "estimate", _no_work)
    monkeypatch.setattr(trace, "estimate", _no_work)


def one_error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def estimate(*args: str):
    return CliRunner().invoke(main, ["estimate", "--model", "tiny", "--gpu", "a10g", *args], catch_exceptions=False)


@pytest.mark.parametrize("levels", ["100000000", "1,10001", "10001"])
def test_estimate_refuses_a_level_past_the_cap_before_simulating(no_sim, levels):
    err = one_error(estimate("--concurrency", levels))
    assert "--concurrency" in err and "at most 10,000" in err


@pytest.fixture
def no_forward(monkeypatch):
    from servebench.estimate import profile

    monkeypatch.setattr(profile, "run_profile", _no_work)


def profile(*args: str):
    return CliRunner().invoke(main, ["profile", "--model", "tiny", "--repeats", "1", *args], catch_exceptions=False)


def test_profile_refuses_a_batch_that_cannot_fit_in_memory(no_forward, tmp_path):
    err = one_error(profile("--batch", "100000000", "--seq", "8", "--out", str(tmp_path / "p")))
    assert "--batch 100,000,000 --seq 8 needs about" in err and "GiB free on cpu" in err
    assert not (tmp_path / "p").exists()


def test_profile_refuses_an_out_it_cannot_write_before_profiling(no_forward, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    assert one_error(profile("--seq", "8", "--out", str(f))) == f"error: --out {f}: a file, not a directory"
    err = one_error(profile("--seq", "8", "--out", str(f / "below")))
    assert err.startswith(f"error: --out {f / 'below'}: cannot create the directory (")
    err = one_error(profile("--seq", "8", "--out", "/proc/x"))
    assert err.startswith("error: --out /proc/x: cannot create the directory (")
    assert f.read_text() == "x"


def test_profile_that_fails_leaves_no_empty_out_behind(tmp_path, monkeypatch):
    from servebench.estimate import profile as mod

    monkeypatch.setattr(mod, "run_profile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    r = profile("--seq", "8", "--out", str(tmp_path / "p" / "q"))
    assert r.exit_code == 1 and r.stderr.strip() == "error: out of memory"
    assert not (tmp_path / "p" / "q").exists()


def test_estimate_refuses_an_out_it_cannot_write_before_simulating(no_sim, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    cases = [(tmp_path, "a directory; give a file name"), (f / "y.json", f"{f} is not a directory"),
             (tmp_path / "nodir" / "y.json", f"{tmp_path / 'nodir'} does not exist"),
             ("/proc/x/y.json", "/proc/x does not exist"), ("/proc/y.json", "cannot write there (")]
    for out, needle in cases:
        err = one_error(estimate("--out", str(out)))
        assert err.startswith(f"error: --out {out}: ") and needle in err, err
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_estimate_write_fault_after_the_work_is_one_line_exit_1(tmp_path, monkeypatch):
    from pathlib import Path

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    r = estimate("--concurrency", "1", "--json", "--out", str(tmp_path / "e.json"))
    assert r.exit_code == 1 and '"levels"' in r.stdout  # the estimate was printed before the write
    assert r.stderr.strip() == f"error: cannot write {tmp_path / 'e.json'}: No space left on device " \
                               "(the estimate above is complete)"


LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
         "vocab_size": 256, "intermediate_size": 128, "max_position_embeddings": 128}


@pytest.mark.parametrize("key,value", [("num_attention_heads", 0), ("hidden_size", -5), ("num_hidden_layers", 0),
                                       ("vocab_size", -1), ("intermediate_size", 0), ("num_key_value_heads", 0),
                                       ("hidden_size", 64.5), ("num_attention_heads", "4")])
@pytest.mark.parametrize("command", ["estimate", "profile"])
def test_a_config_with_a_dimension_that_is_no_positive_integer_is_named(no_sim, no_forward, tmp_path, command, key, value):
    import json

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(LLAMA | {key: value}))
    args = ["--model", str(cfg), "--out", str(tmp_path / "o")]
    r = (estimate if command == "estimate" else profile)(*args)
    assert one_error(r) == f"error: {cfg}: {key} must be a positive integer, got {value!r}"


@pytest.mark.parametrize("layers", ["0", "-1"])
def test_profile_refuses_fewer_than_one_layer(no_forward, layers):
    assert one_error(profile("--seq", "8", "--layers", layers)) == f"error: --layers {layers}: at least 1 decoder layer"


@pytest.mark.parametrize("device", ["bogus", "cuda:abc", "cuda:", "gpu", "cpu:0"])
def test_profile_refuses_a_device_it_does_not_know(no_forward, device):
    assert one_error(profile("--seq", "8", "--device", device)) == f"error: --device {device}: cpu, cuda or cuda:N"
