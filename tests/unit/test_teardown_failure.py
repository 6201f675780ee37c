"""A server teardown that raises never costs the measured results, and never exits 0."""

from __future__ import annotations

import json

import pytest

from servebench.run import orchestrate
from servebench.run.session import ServerSession


def test_a_failing_teardown_keeps_the_results_and_fails_the_run(monkeypatch, emulated_run):
    def broken_close(self):
        raise RuntimeError("docker daemon went away\nsecond line")

    monkeypatch.setattr(ServerSession, "close", broken_close)
    with pytest.raises(orchestrate.RunError) as e:
        emulated_run(5)
    assert e.value.code == 1 and "server teardown failed: docker daemon went away" in str(e.value)
    assert "\n" not in str(e.value) and "servebench cleanup" in str(e.value)
    summary = json.loads((e.value.run_dir / "summary.json").read_text())
    assert summary["completed"] == 5
    assert any("teardown failed" in w for w in summary["warnings"])
    assert (e.value.run_dir / "requests.parquet").stat().st_size > 0
