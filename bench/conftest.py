"""Parametrisation of the benchmark matrix and the session fixture."""

from __future__ import annotations

import pytest

from bench.cases import SMOKE, classification_cases, lm_cases
from bench.harness import BenchSession
from compressors.cache import ArtifactCache
from compressors.context import BuildContext
from compressors.data import DataError, resolve_data_dir


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


def pytest_generate_tests(metafunc):
    if "classification_case" in metafunc.fixturenames:
        selection = metafunc.config.compressbench_selection
        cases = classification_cases(selection.models, selection.techniques)
        metafunc.parametrize(
            "classification_case",
            [pytest.param(case, id=case.id, marks=_case_marks(case)) for case in cases],
        )
    if "lm_case" in metafunc.fixturenames:
        selection = metafunc.config.compressbench_selection
        cases = lm_cases(selection.models, selection.techniques)
        metafunc.parametrize("lm_case", [pytest.param(case, id=case.id, marks=_case_marks(case)) for case in cases])


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
