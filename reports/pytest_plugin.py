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

from reports.compare import Thresholds, add_threshold_options, metric_changes, thresholds_from_options
from reports.runs import config_id

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


def _compared_rows(config) -> dict[str, tuple[str, dict]]:
    """Configuration id -> (run file, extra_info) of the run pytest-benchmark loaded to compare with."""
    if config.compressbench_compared is None:
        session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's own loading of NUM|ID
        compared = {}
        for path, benches in (getattr(session, "compared_mapping", None) or {}).items():
            for bench in benches.values():
                info = bench.get("extra_info") or {}
                if all(info.get(k) is not None for k in ("model", "technique", "tier", "batch_size")):
                    compared[config_id(info)] = (str(path), info)
        config.compressbench_compared = compared
    return config.compressbench_compared


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # a test that failed on its own raises here and is left as it is
    config = item.config
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if not config.getoption("benchmark_compare", None) or fixture is None:
        return result
    info = fixture.extra_info
    if not all(info.get(k) is not None for k in ("model", "technique", "tier", "batch_size")):
        return result
    compared = _compared_rows(config).get(config_id(info))
    if compared is None:
        return result
    path, before = compared
    changes = metric_changes(config_id(info), before, info, config.compressbench_thresholds, timing=False)
    regressed = [c.describe() for c in changes if c.regressed]
    if regressed:
        pytest.fail(f"{config_id(info)} regressed against {path}: " + "; ".join(regressed) +
                    " (thresholds: --compare-accuracy-pp, --compare-perplexity-pct, --compare-size-pct, "
                    "--compare-memory-pct)", pytrace=False)
    return result
