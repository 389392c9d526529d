"""``--benchmark-compare`` on every metric, not only timings.

pytest-benchmark compares only timings (``--benchmark-compare-fail``). With
``--benchmark-compare[=NUM|ID]`` this plugin also takes the run pytest-benchmark loaded for the
comparison and, after each benchmark test that passed, fails it when its accuracy, perplexity,
size or memory regressed beyond the thresholds of :class:`reports.compare.Thresholds`
(options below), with the numbers. A configuration absent from the compared run is not checked.
The root ``conftest.py`` loads it; a unit test can load it with ``-p reports.pytest_plugin``.
"""

from __future__ import annotations

import pytest

from compressors.results import ResultRow
from reports.compare import Thresholds, add_threshold_options, metric_changes, thresholds_from_options

# Timings are pytest-benchmark's own (--benchmark-compare-fail); these are the other metrics.
CHECKED = ("accuracy_pp", "perplexity_pct", "size_pct", "memory_pct")


def pytest_addoption(parser):
    group = parser.getgroup("compressbench comparison (with --benchmark-compare)")
    add_threshold_options(group.addoption, CHECKED)


def thresholds_from(config) -> Thresholds:
    return thresholds_from_options(lambda field: config.getoption(f"compare_{field}"), CHECKED)


def pytest_configure(config):
    from compressors import CompressbenchError

    try:
        config.compressbench_thresholds = thresholds_from(config)
    except CompressbenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.compressbench_compared = None


class PytestBenchmarkChanged(RuntimeError):
    """pytest-benchmark no longer exposes the compared run where this adapter reads it."""


def compared_benchmarks(config) -> dict:
    """The run pytest-benchmark loaded for ``--benchmark-compare``: ``{path: {fullname: benchmark}}``.

    pytest-benchmark has no public API for it; this is the one place that reads its session's
    ``compared_mapping`` (pytest-benchmark 5.x), so that the comparison uses exactly the run
    pytest-benchmark resolved from NUM|ID and storage. When that attribute is gone, this raises
    instead of silently comparing nothing (tests/test_reports_compare.py holds it).
    """
    session = getattr(config, "_benchmarksession", None)
    if session is None or not hasattr(session, "compared_mapping"):
        import pytest_benchmark

        raise PytestBenchmarkChanged(
            f"pytest-benchmark {getattr(pytest_benchmark, '__version__', '?')} no longer exposes the compared run "
            "(config._benchmarksession.compared_mapping): compressbench cannot check accuracy, size and memory "
            "against it; pin pytest-benchmark<6 or update reports/pytest_plugin.py")
    return session.compared_mapping or {}


def _compared_rows(config) -> dict[str, tuple[str, ResultRow]]:
    """Configuration id -> (run file, row) of the run pytest-benchmark loaded to compare with."""
    if config.compressbench_compared is None:
        compared = {}
        for path, benches in compared_benchmarks(config).items():
            for bench in benches.values():
                info = bench.get("extra_info") or {}
                if ResultRow.is_result(info):
                    row = ResultRow.from_extra_info(info)
                    compared[row.config_id] = (str(path), row)
        config.compressbench_compared = compared
    return config.compressbench_compared


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # a test that failed on its own raises here and is left as it is
    config = item.config
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if not config.getoption("benchmark_compare", None) or fixture is None:
        return result
    if not ResultRow.is_result(fixture.extra_info):
        return result
    after = ResultRow.from_extra_info(fixture.extra_info)
    compared = _compared_rows(config).get(after.config_id)
    if compared is None:
        return result
    path, before = compared
    changes = metric_changes(after.config_id, before, after, config.compressbench_thresholds, timing=False)
    regressed = [c.describe() for c in changes if c.regressed]
    if regressed:
        pytest.fail(f"{after.config_id} regressed against {path}: " + "; ".join(regressed) +
                    " (thresholds: --compare-accuracy-pp, --compare-perplexity-pct, --compare-size-pct, "
                    "--compare-memory-pct)", pytrace=False)
    return result
