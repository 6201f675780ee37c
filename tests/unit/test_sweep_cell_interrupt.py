"""A Ctrl-C that lands just after a sweep cell was marked running (the signal is handled when
the index write's fsync returns) must leave the cell interrupted, never running: a real sweep
test saw index.json say "running" for a cell nothing ran after exit 130."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from servebench.sweep import group as group_mod


class Host:
    def __init__(self, tmp_path, interrupt_in_started: bool | BaseException):
        self.tmp_path, self.interrupt = tmp_path, interrupt_in_started
        self.marks: list[str] = []

    def cell_dir(self, cell):
        return self.tmp_path / cell.id

    def started(self, cell, run_dir):
        self.marks.append("running")
        if self.interrupt is True:
            raise KeyboardInterrupt
        if self.interrupt:
            raise self.interrupt

    def finished(self, cell, status, error, run_dir, summary):
        self.marks.append(status)

    def progress(self, done, total):
        pass

    def phase(self, message):
        pass


def _measure(monkeypatch, tmp_path, interrupt_in_started, measure):
    monkeypatch.setattr(group_mod, "run_config", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(group_mod, "measure", measure)
    host = Host(tmp_path, interrupt_in_started)
    cell = SimpleNamespace(id="g00-c0004-r0", load=None, search=None, as_dict=lambda: {"load": {}})
    grp = SimpleNamespace(id="g00", server=None, server_dict=lambda: {})
    cfg = SimpleNamespace(reset_cache=False)
    return host, lambda: group_mod._measure_cell(cfg, grp, cell, session=None, host=host, tokenizer=None,
                                                 prepared=SimpleNamespace())


def test_ctrl_c_as_the_cell_is_marked_running_marks_it_interrupted(monkeypatch, tmp_path):
    def never(*a, **k):
        raise AssertionError("no load after the Ctrl-C")

    host, run = _measure(monkeypatch, tmp_path, True, never)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert host.marks == ["running", "interrupted"]


def test_a_cell_measured_without_a_ctrl_c_is_done(monkeypatch, tmp_path):
    host, run = _measure(monkeypatch, tmp_path, False, lambda *a, **k: SimpleNamespace(summary={"completed": 1}))
    assert run() == {"completed": 1}
    assert host.marks == ["running", "done"]


def test_an_index_that_cannot_be_written_as_the_cell_starts_still_stops_the_sweep(monkeypatch, tmp_path):
    """Not swallowed as one cell's failure: the sweep would run on writing nothing."""
    from servebench.sweep.index import IndexWriteError

    def never(*a, **k):
        raise AssertionError("no load after the index write failed")

    host, run = _measure(monkeypatch, tmp_path, IndexWriteError("cannot write index.json: No space left"), never)
    with pytest.raises(IndexWriteError):
        run()
    assert host.marks == ["running"]
