"""``--benchmark-compare`` on every metric, not only timings.

pytest-benchmark compares only timings (``--benchmark-compare-fail``). With
``--benchmark-compare[=NUM|ID]`` this plugin also takes the run pytest-benchmark loaded for the
comparison and, after each benchmark test that passed, fails it when a compared metric other than
latency (accuracy, perplexity, size, memory: those with a ``compare`` rule in
:mod:`compressors.records.metric_table`, :func:`checked`) regressed beyond the thresholds of
:class:`reports.compare.Thresholds` (options below), with the numbers. A configuration absent from
the compared run is not checked.
The root ``conftest.py`` loads it beside ``bench.plugin``; a unit test can load it alone with
``-p reports.pytest_plugin`` (it brings the suite's options module, where its flags are declared).

Latency gets the same gate as ``python -m reports compare`` (threshold, Mann-Whitney on the paired
block ratios, beyond the between-run spread of all the configurations both runs have), judged once
every test has run, and is **confirmed by re-timing**: each configuration flagged slower is paired
with fp32 again at the end of the session, minutes after its test, and stays a regression only when
that re-timing is flagged as well (:func:`reports.compare.confirm_latency`). On an unchanged
configuration the paired ratio drifts with the machine's state over minutes (a 35-49% "slowdown" now
and then in A/A runs, docs/verdicts.md), which a single timing window cannot tell from a real one; a real
slowdown is there again when re-timed. A confirmed regression makes the session exit 1; the
re-timing is saved in the row (``extra_info.retimed``). ``--no-retime`` turns the latency gate off.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from bench.plugin.options import setting
from bench.plugin.state import run_state
from compressors.records import metric_table
from compressors.records.results import ResultRow
from reports.compare import (
    Thresholds,
    confirm_latency,
    latency_spread,
    metric_changes,
    thresholds_from_options,
)


def checked() -> tuple[str, ...]:
    """The thresholds checked after each test: every compared metric of the table of metrics but latency
    (pytest-benchmark's own --benchmark-compare-fail keeps working too)."""
    return tuple(m.compare.threshold for m in metric_table.compared() if not m.compare.timing)


def latency() -> tuple[str, ...]:
    """The thresholds checked once all tests ran (they need the between-run spread of every row) and
    confirmed by re-timing."""
    return tuple(m.compare.threshold for m in metric_table.compared() if m.compare.timing)


RETIMED_BY = "its re-timing at the end of this session"


# The --compare-* and --no-retime flags are in the suite's one options table (bench.plugin.options.OPTIONS: the
# settings, and a --compare-* threshold per compared metric of the table of metrics), registered by
# bench.plugin.options, so they can live in [tool.compressbench] like every other setting.
pytest_plugins = ["bench.plugin.options"]


@dataclasses.dataclass
class ComparisonState:
    """This session's comparison with a saved run (on ``config.stash``)."""

    thresholds: Thresholds
    compared: dict | None = None  # configuration id -> (run file, row) of the compared run, read once
    latency_verdicts: list | None = None
    latency_compared: dict | None = None


COMPARISON = pytest.StashKey[ComparisonState]()


def thresholds_from(config) -> Thresholds:
    return thresholds_from_options(lambda field: setting(config, f"compare_{field}"), checked() + latency())


def pytest_configure(config):
    from compressors import CompressbenchError

    try:
        config.stash[COMPARISON] = ComparisonState(thresholds_from(config))
    except CompressbenchError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    state = config.stash[COMPARISON]
    if state.compared is None:
        compared = {}
        for path, benches in compared_benchmarks(config).items():
            for bench in benches.values():
                info = bench.get("extra_info") or {}
                if ResultRow.is_result(info):
                    row = ResultRow.from_extra_info(info, median_s=(bench.get("stats") or {}).get("median"))
                    compared[row.config_id] = (str(path), row)
        state.compared = compared
    return state.compared


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
    changes = metric_changes(after.config_id, before, after, config.stash[COMPARISON].thresholds, timing=False)
    regressed = [c.describe() for c in changes if c.regressed]
    if regressed:
        options = ", ".join(m.compare.option for m in metric_table.compared() if not m.compare.timing)
        pytest.fail(f"{after.config_id} regressed against {path}: " + "; ".join(regressed) +
                    f" (thresholds: {options})", pytrace=False)
    return result


def retime_status(verdict) -> str:
    """``confirmed``, ``cleared`` (a rare run) or ``unconfirmed`` (re-timing failed or contended: it stands)."""
    return "cleared" if verdict.cleared else ("confirmed" if verdict.confirmed else "unconfirmed")


def judge_latency(config, current: dict, retime) -> list:
    """The latency gate at the end of a session: ``current`` maps configuration id -> (extra_info dict,
    row with its median and round times) of this run; each configuration flagged slower than the
    compared run is re-timed with ``retime(config_id, median_s, round_s)`` (``{"speed_vs_fp32",
    "contention"}``) and judged by :func:`reports.compare.confirm_latency`; the re-timing and the
    verdict are written into its ``extra_info["retimed"]``. Returns the flagged changes, each
    confirmed (``regressed``), cleared, or unconfirmed (the re-timing failed or was contended)."""
    from pathlib import Path

    compared = _compared_rows(config)
    common = sorted(current.keys() & compared.keys())
    spread = latency_spread((compared[c][1], current[c][1]) for c in common)
    runs = sorted({Path(compared[c][0]).stem for c in common})
    config.stash[COMPARISON].latency_compared = {"runs": runs, "configurations": len(common), "spread": spread}
    thresholds = thresholds_from(config)
    verdicts = []
    for config_id in common:
        (path, before), (info, after) = compared[config_id], current[config_id]
        flagged = [c for c in metric_changes(config_id, before, after, thresholds, spread=spread)
                   if c.metric.timing and c.regressed]
        if not flagged:
            continue
        label = Path(path).stem
        try:
            again = retime(config_id, after.latency.median_s, after.latency.round_s or [])
        except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:  # noqa: BLE001
            # any failure (a placement check that fails or skips, too) leaves the regression standing, said why
            verdict = confirm_latency(flagged[0], before, None, f"{RETIMED_BY} (it failed: {exc})", spread,
                                      before_label=label)
            info["retimed"] = {"against": label, "error": str(exc), "verdict": "unconfirmed"}
        else:
            confirm = after.replace(latency={"speed_vs_fp32": again["speed_vs_fp32"],
                                             "contention": again["contention"]})
            verdict = confirm_latency(flagged[0], before, confirm, RETIMED_BY, spread, before_label=label)
            info["retimed"] = {"against": label, **again, "verdict": retime_status(verdict)}
        verdicts.append(verdict)
    return verdicts


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Before pytest-benchmark saves the run (its own sessionfinish wrapper): judge latency against the
    compared run and re-time what was flagged (see the module's docstring)."""
    config = session.config
    state = run_state(config)
    bench_session = state.bench_session if state is not None else None
    benchmarks = getattr(getattr(config, "_benchmarksession", None), "benchmarks", None)
    finished = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)  # not interrupted
    if (finished and config.getoption("benchmark_compare", None) and not setting(config, "no_retime")
            and bench_session is not None and benchmarks):
        current = {}
        for bench in benchmarks:
            info = bench.extra_info
            if bench and ResultRow.is_result(info):
                row = ResultRow.from_extra_info(info, median_s=bench.stats.median)
                current[row.config_id] = (info, row)
        verdicts = judge_latency(config, current, bench_session.retime)
        config.stash[COMPARISON].latency_verdicts = verdicts
        if any(v.regressed for v in verdicts) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash.get(COMPARISON, None)
    verdicts, compared = (state.latency_verdicts, state.latency_compared) if state is not None else (None, None)
    if verdicts is None or compared is None:
        return
    tr = terminalreporter
    if not verdicts:
        spread = compared["spread"]
        bar = f", bar {(math.exp(spread['bar']) - 1) * 100:.1f}% slower vs fp32" if spread else ""
        tr.write_line(f"compressbench latency vs {', '.join(compared['runs']) or 'the compared run'}: no configuration "
                      f"flagged slower ({compared['configurations']} compared{bar})")
        return
    status = [retime_status(v) for v in verdicts]
    tr.section("compressbench latency vs the compared run")
    tr.write_line(f"{len(verdicts)} configuration(s) flagged slower, re-timed at the end of the session: "
                  f"{status.count('confirmed')} confirmed, {status.count('cleared')} cleared as rare runs, "
                  f"{status.count('unconfirmed')} unconfirmed (standing)")
    for verdict, word in zip(verdicts, status, strict=True):
        shown = {"confirmed": "REGRESSED", "unconfirmed": "REGRESSED (unconfirmed)", "cleared": "cleared"}[word]
        tr.write_line(f"  {shown}: {verdict.config}: {verdict.describe()}", red=verdict.regressed)
