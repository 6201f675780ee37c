"""Resume bookkeeping: what is done stays done, what changed is refused, nothing is lost."""

from __future__ import annotations

import json

import pytest

from servebench.sweep.config import SweepConfig
from servebench.sweep.index import SweepIndex, headline
from servebench.sweep.plan import expand


def plan(**load):
    return expand(SweepConfig.model_validate({"name": "t", "matrix": {"engine": ["vllm", "tgi"]},
                                              "load": {"concurrency": [1, 2, 4], "requests": 10, **load}}))


def test_todo_skips_done_and_retries_failed_and_interrupted(tmp_path):
    p = plan()
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(p)
    assert len(idx.todo(p).cells) == 6
    idx.mark_cell("g00-c0001-r0", "done")
    idx.mark_cell("g00-c0002-r0", "failed", error="boom")
    idx.mark_cell("g00-c0004-r0", "interrupted")
    idx.mark_cell("g01-c0001-r0", "done")
    again = SweepIndex.load(tmp_path)  # from disk, as a re-run sees it
    todo = again.todo(p)
    assert [c.id for c in todo.cells] == ["g00-c0002-r0", "g00-c0004-r0", "g01-c0002-r0", "g01-c0004-r0"]
    assert again.counts() == {"done": 2, "failed": 1, "interrupted": 1, "pending": 2}


def test_a_changed_config_is_refused_not_mixed(tmp_path):
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(plan())
    with pytest.raises(ValueError, match="cell g00-c0001-r0 had load"):
        idx.sync(plan(requests=20))
    other = expand(SweepConfig.model_validate({"name": "t", "matrix": {"engine": ["sglang"]},
                                               "load": {"concurrency": [1], "requests": 10}}))
    with pytest.raises(ValueError, match="server group g00 was vllm/tiny"):
        idx.sync(other)


def test_adding_load_points_extends_an_existing_sweep(tmp_path):
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(plan())
    bigger = expand(SweepConfig.model_validate({"name": "t", "matrix": {"engine": ["vllm", "tgi"]},
                                                "load": {"concurrency": [1, 2, 4], "rate": [3.0], "requests": 10}}))
    idx.sync(bigger)
    assert len(idx.data["cells"]) == 8


def test_cell_dir_keeps_an_earlier_attempt(tmp_path):
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    d = idx.cell_dir("g00-c0001-r0")
    (d / "requests.parquet").write_bytes(b"measured")
    d2 = idx.cell_dir("g00-c0001-r0")
    assert d2 == d and not (d2 / "requests.parquet").exists()
    kept = tmp_path / "runs" / ".attempts" / "g00-c0001-r0.1" / "requests.parquet"
    assert kept.read_bytes() == b"measured"
    idx.cell_dir("g00-c0001-r0")
    assert (tmp_path / "runs" / ".attempts" / "g00-c0001-r0.2").is_dir()


def test_index_file_is_complete_json_after_every_mark(tmp_path):
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(plan())
    idx.mark_cell("g00-c0001-r0", "running", run_dir="runs/g00-c0001-r0")
    data = json.loads((tmp_path / "index.json").read_text())
    assert data["cells"][0]["status"] == "running" and not list(tmp_path.glob("*.tmp"))


def test_headline_reads_summary_fields():
    s = {"request_throughput": 2.0, "output_token_throughput": 50.0, "completed": 9, "failed": 1, "error_rate": 0.1,
         "ttft_ms": {"p50": 10.0, "p99": 30.0}, "tpot_ms": {"p50": 1.0, "p99": 2.0}, "itl_ms": {}, "e2e_ms": {"p50": 5.0},
         "ms_per_token": {"p50": 3.0}, "output_tokens": {"achieved_mean": 25.0}}
    h = headline(s)
    assert h["ttft_ms_p99"] == 30.0 and h["itl_ms_p50"] is None and h["output_tokens_achieved_mean"] == 25.0
    assert h["e2e_ms_p99"] is None and h["error_rate"] == 0.1


def _searched(tmp_path, status: str, probe: str) -> tuple[SweepIndex, object]:
    from servebench.sweep.plan import Cell, Group, LoadPoint, Plan

    p = plan()
    p = Plan(p.config, [Group(g.id, g.server, []) for g in p.groups])
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(p)
    idx.mark_group("g00", status=status)
    idx.mark_group("g01", status="done")
    cell = Cell("g00-lim-c0004", "g00", LoadPoint("concurrency", 4, None, 10, None, 512, 128, 0, 10004000), search=True)
    idx.add_cell(cell)
    idx.mark_cell(cell.id, probe)
    return idx, p


def _limit(slo: str = "ttft_p99<=1s", by: str = "concurrency"):
    from servebench.sweep.group import LimitSpec

    return LimitSpec(slo, by)


def _answered(idx: SweepIndex, slo: str = "ttft_p99<=1s", by: str = "concurrency") -> None:
    for gid in ("g00", "g01"):
        idx.mark_group(gid, status="done", limit={"slo": slo, "by": by, "low": 4})


def test_a_resumed_search_runs_again_where_a_probe_cell_failed(tmp_path):
    idx, p = _searched(tmp_path, "done", "failed")
    _answered(idx)
    assert [g.id for g in idx.to_search(p, _limit()).groups] == ["g00"]
    (tmp_path / "ok").mkdir()
    idx, p = _searched(tmp_path / "ok", "done", "done")
    _answered(idx)
    assert [g.id for g in idx.to_search(p, _limit()).groups] == []


def test_a_failed_probe_the_last_search_did_not_use_neither_fails_the_sweep_nor_resumes_it(tmp_path, capsys):
    """c=4 failed in an earlier search; the last one (another SLO) answered from 1, 2 and 3 and
    never reached 4. That cell kept every resume searching again and the sweep exiting 1."""
    import io

    from rich.console import Console

    from servebench.sweep import console as out

    idx, p = _searched(tmp_path, "done", "failed")
    tried = [{"level": lv, "verdict": "met", "met": True, "runs": 1, "bounds": []} for lv in (1, 2, 3)]
    for gid in ("g00", "g01"):
        idx.mark_group(gid, status="done", limit={"slo": "ttft_p99<=1s", "by": "concurrency", "low": 3, "tried": tried})
    assert idx.to_search(p, _limit()).groups == []
    shown = io.StringIO()
    out.finish(idx, tmp_path, "sweep", False, Console(file=shown, width=200), None)  # exits 0
    assert "error:" not in capsys.readouterr().err
    assert "1 failed probe(s) the last search did not use" in shown.getvalue()
    # the last search tried 4 (twice: a repeat) and that probe failed: it is the answer's, so it counts
    tried.append({"level": 4, "verdict": "missed", "met": False, "runs": 2, "bounds": []})
    idx.mark_group("g00", limit={"slo": "ttft_p99<=1s", "by": "concurrency", "low": 3, "tried": tried})
    assert [g.id for g in idx.to_search(p, _limit()).groups] == ["g00"]
    with pytest.raises(SystemExit) as e:
        out.finish(idx, tmp_path, "sweep", False, Console(file=io.StringIO()), None)
    assert e.value.code == 1 and "g00-lim-c0004" in capsys.readouterr().err


def test_a_resumed_search_runs_where_no_answer_is_there_for_this_slo(tmp_path):
    idx, p = _searched(tmp_path, "done", "done")
    idx.data["groups"][0].pop("limit", None)
    idx.mark_group("g01", limit={"slo": "ttft_p99<=1s", "by": "concurrency", "low": 4})
    # g00: done measuring its configured cells, never searched
    assert [g.id for g in idx.to_search(p, _limit()).groups] == ["g00"]
    _answered(idx)
    assert [g.id for g in idx.to_search(p, _limit("ttft_p99<=1000ms")).groups] == []  # the same bound
    assert [g.id for g in idx.to_search(p, _limit("ttft_p99<=500ms")).groups] == ["g00", "g01"]
    assert [g.id for g in idx.to_search(p, _limit(by="rate")).groups] == ["g00", "g01"]


def _probed(tmp_path, server: dict | None = None):
    """A sweep dir holding one limit-search cell (c=4) measured with 16 input tokens."""
    from servebench.sweep.plan import Cell, Group, Plan, search_point

    cfg = SweepConfig.model_validate({"name": "t", "servers": [server or {"engine": "vllm"}],
                                      "load": {"concurrency": [1], "requests": 6, "input_tokens": 16}})
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(Plan(cfg, [Group(g.id, g.server, []) for g in expand(cfg).groups]))
    idx.add_cell(Cell("g00-lim-c0004", "g00", search_point(cfg, 4, 0), search=True))
    idx.save()
    return cfg


def test_a_search_cell_of_another_load_is_refused_on_resume(tmp_path):
    from servebench.sweep.plan import Group, Plan

    _probed(tmp_path)
    again = SweepIndex.load(tmp_path)
    same = SweepConfig.model_validate({"name": "t", "servers": [{"engine": "vllm"}],
                                       "load": {"concurrency": [1], "requests": 6, "input_tokens": 16}})
    again.sync(Plan(same, [Group(g.id, g.server, []) for g in expand(same).groups]))  # unchanged: fine
    changed = SweepConfig.model_validate({"name": "t", "servers": [{"engine": "vllm"}],
                                          "load": {"concurrency": [1], "requests": 6, "input_tokens": 64}})
    with pytest.raises(ValueError, match="limit-search cell g00-lim-c0004 had load .*'input_tokens': 16.* the config "
                                         "now says .*'input_tokens': 64"):
        again.sync(Plan(changed, [Group(g.id, g.server, []) for g in expand(changed).groups]))


def test_a_resumed_search_with_another_load_is_one_line_and_starts_nothing(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.unit.test_sweep_cli import SPEC

    (tmp_path / "r" / "t").mkdir(parents=True)
    _probed(tmp_path / "r" / "t", {"engine": str(SPEC), "model": "tiny"})
    cfg = {"name": "t", "results_dir": str(tmp_path / "r"), "telemetry": False,
           "servers": [{"engine": str(SPEC), "model": "tiny"}],
           "load": {"concurrency": [1], "requests": 6, "input_tokens": 64}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "sweep", str(tmp_path / "s.yaml"), "--resume",
                        "--max-load-under", "ttft_max<=60s"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1, p.stderr
    assert "limit-search cell g00-lim-c0004 had load" in errors[0] and "starting server" not in p.stderr


def test_only_counts_its_own_cells_for_the_exit_status(tmp_path, capsys):
    """A host's `--only hardware=X` part of a split study: the other hosts' cells are pending."""
    import io

    from rich.console import Console

    from servebench.sweep import console as out
    from servebench.sweep.plan import only

    p = plan()
    idx = SweepIndex.create(tmp_path, "sweep", "t")
    idx.sync(p)
    mine = only(p, "engine=vllm")
    for c in mine.cells:
        idx.mark_cell(c.id, "done")
    shown = io.StringIO()
    out.finish(idx, tmp_path, "sweep", False, Console(file=shown, width=200), out.selection(mine))  # exits 0
    assert "error:" not in capsys.readouterr().err
    total = len(idx.data["cells"])
    assert total > 3 and f"sweep: 3 done of 3 cell(s) --only picked ({total} in the sweep)" in shown.getvalue()
    idx.mark_cell("g00-c0002-r0", "failed", error="boom")
    with pytest.raises(SystemExit) as e:
        out.finish(idx, tmp_path, "sweep", False, Console(file=io.StringIO()), out.selection(mine))
    assert e.value.code == 1
    assert "error: 1 of 3 cell(s) not done (first: g00-c0002-r0: boom)" in capsys.readouterr().err
