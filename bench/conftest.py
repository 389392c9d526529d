"""Parametrisation of the benchmark matrix and the session fixture."""

from __future__ import annotations

import pytest

from bench.cases import SMOKE, cases
from bench.harness import BenchSession
from compressors.cache import ArtifactCache
from compressors.context import BuildContext
from compressors.data import DataError, resolve_data_dir
from compressors.models import TASK_CAUSAL_LM, TASK_CLASSIFICATION


def _case_marks(case) -> list:
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
    return marks


# Each test function takes the cases of one task (test ids stay stable across refactors: saved runs
# are compared by them).
CASE_FIXTURES = {"classification_case": TASK_CLASSIFICATION, "lm_case": TASK_CAUSAL_LM}


def pytest_generate_tests(metafunc):
    for fixture, task in CASE_FIXTURES.items():
        if fixture in metafunc.fixturenames:
            selection = metafunc.config.compressbench_selection
            metafunc.parametrize(fixture, [pytest.param(case, id=case.id, marks=_case_marks(case))
                                           for case in cases(task, selection.models, selection.techniques)])


@pytest.fixture(scope="session")
def bench_session(pytestconfig) -> BenchSession:
    try:
        data_dir = resolve_data_dir(pytestconfig.getoption("--data-dir"))
    except DataError as exc:
        pytest.exit(f"compressbench: {exc}", returncode=4)
    cache_dir = pytestconfig.getoption("--cache-dir")
    ctx = BuildContext(cache=ArtifactCache(cache_dir), data_dir=data_dir)
    session = BenchSession(ctx, pytestconfig)
    session.check_data()
    return session
