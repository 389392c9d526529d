"""bench/fault_injection.py: the test-only plugin that slows one configuration's timed call, loaded with
``-p``, through the suite's ``pytest_compressbench_timed_call`` hook (bench/plugin/hookspecs.py)."""

from pathlib import Path

import pytest

from bench.fault_injection import parse_slowdowns, slowed

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    """A clock that moves only when told, and a sleep that records instead of sleeping."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)


def test_a_slowed_call_sleeps_factor_minus_one_times_its_own_duration(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("bench.fault_injection.time", clock)

    def call(x, y):
        clock.now += 0.4  # the call takes 0.4 s
        return x + y

    assert slowed(call, 1.25)(2, 3) == 5
    assert clock.slept == [pytest.approx(0.1)]


@pytest.mark.parametrize("spec", ["m-t-cpu-bs1", "m-t-cpu-bs1=fast", "=2", "m-t-cpu-bs1=0.5"])
def test_a_malformed_slowdown_is_a_usage_error_naming_the_form(spec):
    with pytest.raises(pytest.UsageError, match=rf"--inject-slowdown '{spec}': need TEST_ID=FACTOR with FACTOR >= 1"):
        parse_slowdowns([spec])


def test_slowdowns_are_read_per_test_id():
    assert parse_slowdowns(["a-fp32-cpu-bs1=1.25", "b-int8-cpu-bs32=2"]) == {"a-fp32-cpu-bs1": 1.25,
                                                                          "b-int8-cpu-bs32": 2.0}


_SUITE_CONFTEST = """
from bench.plugin import hookspecs


def pytest_addhooks(pluginmanager):  # as bench/conftest.py does
    hookspecs.register(pluginmanager)
"""

_HARNESS_TEST = """
from types import SimpleNamespace

import pytest

from bench.harness import BenchSession


class Clock:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)


@pytest.fixture
def timed_calls(request, monkeypatch):
    # the harness's own path from a prepared case to the call pytest-benchmark times, and to the re-timing
    clock = Clock()
    monkeypatch.setattr("bench.fault_injection.time", clock, raising=False)

    def call(x):
        clock.now += 0.5
        return 2 * x

    session = BenchSession(None, request.config)
    session.prepare = lambda case: SimpleNamespace(case=case, timed=call, args=(3,))
    session.timing.pair_again = lambda run, median_s, round_s: {"timed": run.timed}

    def timed(case_id):
        session.cases[case_id] = SimpleNamespace(id=case_id)
        return session.prepare_timed(session.cases[case_id]).timed, session.retime(case_id, 0.5, [0.5])["timed"]

    return call, clock, timed


def test_the_named_configuration_is_slowed(timed_calls):
    call, clock, timed = timed_calls
    for slow in timed("m-slow-cpu-bs1"):
        assert slow is not call and slow(3) == 6
    assert clock.slept == [pytest.approx(0.75)] * 2  # 0.5 s calls, 2.5x slower: timed and re-timed
    assert timed("m-fast-cpu-bs1") == (call, call)


def test_nothing_is_slowed_without_the_plugin(timed_calls):
    call, clock, timed = timed_calls
    assert timed("m-slow-cpu-bs1") == (call, call) and call(3) == 6 and clock.slept == []
"""


def _run(pytester, monkeypatch, *args):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(_SUITE_CONFTEST)
    pytester.makepyfile(test_harness=_HARNESS_TEST)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_loaded_with_p_the_plugin_slows_the_named_configuration_through_the_harness(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "-p", "bench.fault_injection", "--inject-slowdown", "m-slow-cpu-bs1=2.5",
                  "-k", "named")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["fault injection: m-slow-cpu-bs1 2.5x slower"])  # the run says it has a fault


def test_without_the_plugin_the_timed_call_is_untouched(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "-k", "without")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*fault injection*")
