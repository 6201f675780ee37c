"""The contract between measuring a run (orchestrate.py) and writing it (writer.py): what a
measurement leaves behind, and the verdict the writer hands back. Neither module reaches into
the other's state: orchestrate fills a RunState, the writer returns an Outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from servebench.adapters.base import Adapter
from servebench.analysis import verdict
from servebench.engines.specs import EngineSpec
from servebench.launchers.base import Server
from servebench.load.loop import LoadStats
from servebench.load.prompts import Prompt
from servebench.records import RequestRecord

if TYPE_CHECKING:  # transformers is heavy: only its type, at check time
    from transformers import PreTrainedTokenizerBase

    from servebench.load.workload import Workload


@dataclass
class Prepared:
    """What a measurement needs before any server exists: built once, then reused."""

    spec: EngineSpec
    api: str  # the adapter key in use
    adapter: Adapter
    model_dir: Path | None
    tokenizer: PreTrainedTokenizerBase
    prompts: list[Prompt]
    workload: Workload | None = None  # trace release times, the summary's "workload" block


@dataclass
class RunState:
    """What one measurement left: its records and counters, and how it ended as far as the
    load knows (the writer's Outcome is the final word)."""

    run_dir: Path
    records: list[RequestRecord] = field(default_factory=list)
    stats: LoadStats = field(default_factory=LoadStats)
    server: Server | None = None
    samplers: list = field(default_factory=list)
    status: str = "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    engine_version: str | None = None
    api: str = ""  # the adapter key in use
    connect_ns: list[int] = field(default_factory=list)  # set-up of connections opened before t0
    exit_code: int = verdict.EXIT_FAILED  # used when error is set
    server_exit: str | None = None  # "was killed by signal 9": a launched server that died on its own
    extra_info: dict = field(default_factory=dict)  # run.json blocks from the caller (sweep cell, session)
    workers: int = 1  # load processes used (--workers, or the auto choice)
    workers_reason: str = ""
    self_check_warning: str | None = None  # a prediction; the writer weighs it against the verdict
    split: list[dict] = field(default_factory=list)  # --workers ray:N: each actor's node, share and clock
    started_at: float = field(default_factory=time.time)  # wall clock, for run.json started_at
    workload: Workload | None = None  # Prepared.workload
    spools: list[Path] = field(default_factory=list)  # finished records' raw bytes on disk (store/spool.py)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the run ended, as summary.json, run.json, the error line and the exit code all say."""

    status: str  # complete | failed | interrupted
    error: str | None
    exit_code: int  # the process exit code when error is set (servebench.analysis.verdict)


@dataclass(frozen=True, slots=True)
class Written:
    """What the writer hands back: the verdict, and summary.json as it stands in the run
    directory (None when it could not be written there)."""

    outcome: Outcome
    summary: dict | None
