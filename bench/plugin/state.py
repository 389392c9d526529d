"""The run's state: one :class:`RunState` per pytest session, on ``config.stash``.

Every hook of the suite's plugin reads and writes this object, never module globals, so two sessions in
one process (pytester's in-process runs, a plugin test) cannot see each other's rows, and what a run
holds is listed in one place.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``--models`` and ``--techniques`` chose: None for "all" (the default matrix); models are
    registered names or ModelSpec objects (models given by path or hub id)."""

    models: list | None = None
    techniques: list[str] | None = None


@dataclasses.dataclass
class RunState:
    """What one session of the suite knows and has done so far."""

    settings: Any = None  # compressors.core.settings.Settings: defaults < [tool.compressbench] < command line
    selection: Selection = dataclasses.field(default_factory=Selection)
    user_data: dict = dataclasses.field(default_factory=dict)  # model name -> TaskData of models given by path
    device: Any = None  # the parsed --device choice, or None
    malloc: dict | None = None  # what compressors.machine.allocator.settle_malloc did
    kernel_probe: dict | None = None  # this machine's kernel probe, read once
    bench_session: Any = None  # bench.harness.BenchSession (re-times flagged configurations at the end)
    remote: Any = None  # compressors.core.remote_cache.RemoteCache, when the settings name one
    remote_problem: str | None = None  # why the remote cache named cannot be used here, said at session start
    rows: list = dataclasses.field(default_factory=list)  # ResultRow of every finished benchmark test
    times: list[dict] = dataclasses.field(default_factory=list)  # each benchmark test's seconds by phase
    partial: Any = None  # bench.partial_run.PartialRun, opened at the first finished row
    partial_file: Path | None = None  # where an interrupted run's rows were kept
    interrupted: str | None = None  # "SIGTERM", "Ctrl-C" or None
    selected: int | None = None  # tests collected and selected
    start: float | None = None  # time.perf_counter() at configure
    plans: list | None = None  # plan lines' records (bench/plan.py) of models given by path or hub id
    search: Any = None  # bench.plugin.search.SearchRequest under --search, else None
    search_record: dict | None = None  # the whole search (saved with the run)
    search_winners: dict = dataclasses.field(default_factory=dict)  # model name -> technique names it chose
    search_budgets: dict = dataclasses.field(default_factory=dict)  # budgets table entries of the winners


RUN_STATE = pytest.StashKey[RunState]()


def run_state(config) -> RunState | None:
    """The session's :class:`RunState`, or None for a config the plugin did not configure (a stand-in
    config in unit tests, a run without the plugin)."""
    stash = getattr(config, "stash", None)
    return None if stash is None else stash.get(RUN_STATE, None)
