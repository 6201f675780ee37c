"""run_group against a scripted server (no process, no load): what index.json says about a
group whose server does not start, or dies during a limit search and does not start again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from servebench.run.orchestrate import RunError
from servebench.sweep import group as group_mod
from servebench.sweep.config import SweepConfig
from servebench.sweep.group import LimitSpec, run_group
from servebench.sweep.index import SweepIndex
from servebench.sweep.local import LocalHost, Progress
from servebench.sweep.plan import Group, Plan, expand


class Server:
    """Starts `starts` times at most; a load at `kills_at` streams or more kills it; one at
    `dies_after` completes, then the server exits."""

    def __init__(self, starts: int = 1, kills_at: int = 10**6, dies_after: int = 10**6) -> None:
        self.starts, self.kills_at, self.dies_after = starts, kills_at, dies_after
        self.opens, self.up, self.loads = 0, False, []

    def session(self, *a, **k):
        server = self

        class Session:
            launch_s, teardown_s = 0.0, None

            def open(self, phase):
                server.opens += 1
                if server.opens > server.starts:
                    raise RuntimeError("engine exited with status 1")
                server.up = True

            def alive(self):
                return server.up

            def close(self):
                server.up, self.teardown_s = False, 0.0

            def reset_cache(self):
                pass

        return Session()

    def measure(self, rc, p, session, run_dir, *a, **k):
        c = rc.load.concurrency
        self.loads.append(c)
        if c >= self.kills_at:
            self.up = False
            raise RunError("the server was killed by signal 9 during the load")
        self.up = self.up and c < self.dies_after
        return SimpleNamespace(summary={"completed": 4, "failed": 0, "ttft_ms": {"max": 10.0 * c}})


def _sweep(tmp_path, monkeypatch, server: Server, concurrency=(1,), search: bool = False):
    monkeypatch.setattr(group_mod, "prepare", lambda *a, **k: SimpleNamespace(spec=None, api=None, model_dir=None,
                                                                              tokenizer=None))
    monkeypatch.setattr(group_mod, "ServerSession", server.session)
    monkeypatch.setattr(group_mod, "measure", server.measure)
    cfg = SweepConfig.model_validate({"name": "t", "telemetry": False, "servers": [{"engine": "vllm"}],
                                      "load": {"concurrency": list(concurrency), "requests": 4}})
    index = SweepIndex.create(tmp_path, "sweep", "t")
    # a limit search's plan, as execute() syncs it: the groups without the configured cells
    index.sync(expand(cfg) if not search else Plan(cfg, [Group(g.id, g.server, []) for g in expand(cfg).groups]))
    return cfg, index, LocalHost(index, Progress(0, lambda m: None), lambda m: None)


def test_a_search_whose_server_is_gone_fails_the_group_and_reports_no_limit(tmp_path, monkeypatch):
    # c=1, 2 met; c=4 kills it (a measured miss); c=3 could not be measured: unknown, not a miss
    server = Server(starts=1, kills_at=4)
    cfg, index, host = _sweep(tmp_path, monkeypatch, server, search=True)
    g = Group("g00", expand(cfg).groups[0].server, [])
    row = run_group(cfg, g, host, LimitSpec("ttft_max<=1s", max_level=16, repeats=1))
    assert server.loads == [1, 2, 4]
    saved = SweepIndex.load(tmp_path).group("g00")
    assert saved["status"] == row["status"] == "failed"
    assert saved["error"].startswith("server died and did not restart: engine exited")
    assert not saved.get("limit")
    assert sorted(c["id"] for c in SweepIndex.load(tmp_path).data["cells"]) == [
        "g00-lim-c0001", "g00-lim-c0002", "g00-lim-c0004"]  # no row for the level never measured


def test_a_search_cut_short_between_levels_exits_1_though_every_cell_is_done(tmp_path, monkeypatch, capsys):
    from rich.console import Console

    from servebench.sweep import console as out

    server = Server(starts=1, dies_after=2)
    cfg, index, host = _sweep(tmp_path, monkeypatch, server, search=True)
    run_group(cfg, Group("g00", expand(cfg).groups[0].server, []), host, LimitSpec("ttft_max<=1s", max_level=16,
                                                                                   repeats=1))
    assert {c["status"] for c in index.data["cells"]} == {"done"}
    with pytest.raises(SystemExit) as e:
        out.finish(index, tmp_path, "sweep", False, Console(file=None, stderr=True))
    assert e.value.code == 1
    assert "error: 1 server group(s) failed (first: g00: server died and did not restart" in capsys.readouterr().err


def test_a_group_whose_server_never_starts_is_failed_in_the_index(tmp_path, monkeypatch):
    server = Server(starts=0)
    cfg, index, host = _sweep(tmp_path, monkeypatch, server)
    run_group(cfg, expand(cfg).groups[0], host)
    saved = SweepIndex.load(tmp_path)
    g = saved.group("g00")
    assert (g["status"], g["launches"]) == ("failed", 1)
    assert g["error"] == "server did not start: engine exited with status 1"
    assert [(c["status"], c["error"]) for c in saved.data["cells"]] == [("failed", g["error"])]
