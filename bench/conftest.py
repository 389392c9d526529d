"""The benchmark matrix's parametrisation and the session fixture (hooks and options: bench/plugin/)."""

from __future__ import annotations

import pytest

from bench.cases import SMOKE, cases
from bench.harness import BenchSession
from bench.plugin.gating import case_of
from bench.plugin.state import run_state
from compressors.builders.context import BuildContext
from compressors.core.cache import ArtifactCache
from compressors.core.scratch import sweep_stale
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.quality.data import DataError, resolve_data_dir


def _case_marks(case, extended: bool = False) -> list:
    marks = [getattr(pytest.mark, case.tier)]
    if case.model.is_hub:
        marks.append(pytest.mark.hub)
    if case.slow:
        marks.append(pytest.mark.slow)
    if case.id in SMOKE:
        marks.append(pytest.mark.smoke)
    reason = case.unsupported_reason()
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    elif case.extended and not extended:
        marks.append(pytest.mark.skip(reason=f"extended: {case.extended}; --extended to run it"))
    return marks


# Each test function takes the cases of one task (test ids stay stable across refactors: saved runs
# are compared by them).
CASE_FIXTURES = {"classification_case": TASK_CLASSIFICATION, "lm_case": TASK_CAUSAL_LM}


def pytest_generate_tests(metafunc):
    for fixture, task in CASE_FIXTURES.items():
        if fixture in metafunc.fixturenames:
            state = run_state(metafunc.config)
            selection, extended = state.selection, bool(state.settings.extended)
            params, seen = [], set()
            for case in cases(task, selection.models, selection.techniques) + searched_cases(state, task):
                if case.id in seen:  # a search chose a configuration the run benchmarks anyway
                    continue
                seen.add(case.id)
                # a compiling technique named in --techniques is asked for; whole-test-set perplexity needs --extended
                asked = bool(selection.techniques) and not case.scenario.full_test
                params.append(pytest.param(case, id=case.id, marks=_case_marks(case, extended or asked)))
            metafunc.parametrize(fixture, params)


def searched_cases(state, task: str) -> list:
    """The configurations ``--search`` chose (bench/plugin/search.py), each for the model it was chosen for."""
    if not state.search_winners:
        return []
    models = {getattr(m, "name", m): m for m in (state.selection.models or state.search_winners)}
    found = []
    for model, names in state.search_winners.items():
        if names and model in models:
            found += cases(task, [models[model]], names)
    return found


def remote_cache(settings):
    """The shared remote artifact cache the settings name (``--cache-remote`` / $COMPRESSBENCH_CACHE_REMOTE),
    or None. Kinds whose loader unpickles never travel; the others may hold the file types their loader declares."""
    if not settings.cache_remote:
        return None
    from compressors.core.remote_cache import RemoteCache
    from compressors.execution.runtime import ARTIFACT_LOADERS

    loaders = {kind: ARTIFACT_LOADERS.get(kind) for kind in ARTIFACT_LOADERS.names()}
    return RemoteCache(settings.cache_remote, settings.cache_remote_mode, bool(settings.cache_remote_required),
                       local_only_kinds=frozenset(kind for kind, loader in loaders.items() if loader.pickled),
                       kind_file_types={kind: loader.remote_file_types for kind, loader in loaders.items()
                                        if loader.remote_file_types})


@pytest.fixture(scope="session")
def bench_session(request, pytestconfig) -> BenchSession:
    state = run_state(pytestconfig)
    settings = state.settings
    try:
        data_dir = resolve_data_dir(settings.data_dir)
    except DataError as exc:
        pytest.exit(f"compressbench: {exc}", returncode=4)
    remote = remote_cache(settings)
    if remote is not None:
        remote.check()  # a URL that cannot work was said at session start (conftest.py); here it is turned off
    ctx = BuildContext(cache=ArtifactCache(settings.cache_dir, remote=remote), data_dir=data_dir)
    sweep_stale(ctx.cache.root)  # temporary and staging folders that killed runs left behind
    session = BenchSession(ctx, pytestconfig)
    if remote is not None:
        remote.timer = session.account.phase  # the run's "time:" line books pulls and pushes apart
        state.remote = remote
        remote.sweep_partials()  # rw: uploads that killed pushers left on the remote, a day old or more
    # only the data of the models this run collected is read (a language-model run never needs SST-2)
    models = {case.model.name: case.model for item in request.session.items if (case := case_of(item)) is not None}
    session.check_data(models.values())
    state.bench_session = session  # re-times flagged configurations (reports/pytest_plugin.py)
    return session
