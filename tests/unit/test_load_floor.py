"""What a run holds for every request before and during the load (its floor, proportional to
--requests): the wire bytes and an empty record, not also each request's built body."""

from __future__ import annotations

import gc

from servebench.adapters.base import Request
from servebench.run import orchestrate


def _requests_alive() -> int:
    gc.collect()
    return sum(type(o) is Request for o in gc.get_objects())


def test_built_requests_are_not_held_once_encoded(monkeypatch, emulated_run):
    real_drive, alive = orchestrate.drive, []
    before = _requests_alive()  # other tests in this process may keep one (a fixture, a cache)

    async def counting_drive(tr, plan, *a, **kw):
        alive.append((len(plan.wires), _requests_alive() - before))
        return await real_drive(tr, plan, *a, **kw)

    monkeypatch.setattr(orchestrate, "drive", counting_drive)
    run_dir = emulated_run(40)
    assert alive and alive[-1][0] == 40  # the measured load's drive was seen
    assert all(n_req <= 0 for _, n_req in alive), alive  # was 40: one Request beside each wire
    assert (run_dir / "summary.json").exists()
