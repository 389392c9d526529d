"""compressors/machine/timing.py: paired speed ratios, the contention monitor and the run's time account, on
synthetic work."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compressors.machine.timing import (
    MIN_BLOCKS,
    ContentionMonitor,
    InterleavedBaseline,
    TimeAccount,
    format_breakdown,
    paired_speed,
    time_breakdown,
)

ROOT = Path(__file__).resolve().parents[1]


def _sleep(seconds):
    return lambda: time.sleep(seconds)


class _Clock:
    """A stand-in for ``time.perf_counter``: time passes only when synthetic work says so, so a timing
    test is exact however loaded the machine is."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    # timing.py reads time.perf_counter at each call; the test's own reads (as pytest-benchmark's) see it too
    monkeypatch.setattr("compressors.machine.timing.time.perf_counter", clock)
    return clock


def _takes(clock, *seconds):
    """A call that advances ``clock`` by each of ``seconds`` in turn, round and round."""
    durations = iter(seconds * 1000)
    return lambda: setattr(clock, "now", clock.now + next(durations))


def test_paired_speed_measures_the_ratio_with_an_interval(clock):
    # the configuration's calls take 4 ms and 5 ms in turn; the baseline's always 10 ms
    result = paired_speed(_takes(clock, 0.004, 0.005), _takes(clock, 0.010), budget_s=0.5, config_estimate_s=0.004)
    assert (result.calls_per_block, result.baseline_calls_per_block) == (5, 2)  # 0.02 s a side at least
    assert result.blocks == 12  # 0.5 s // (5 x 4 ms + 2 x 10 ms)
    # after the 4 ms sizing call, a block's 5 calls take 23 ms and 22 ms in turn: 10 ms / 4.6 ms, 10 ms / 4.4 ms
    assert result.block_ratios == pytest.approx([50 / 23, 50 / 22] * 6)
    assert result.speed == pytest.approx((50 / 23 + 50 / 22) / 2)  # the median of an even count
    assert (result.low, result.high) == pytest.approx((50 / 23, 50 / 22))
    assert result.seconds == pytest.approx(0.010 + 0.004 + 12 * 0.020 + 6 * 0.023 + 6 * 0.022)
    assert result.to_dict()["ci95"] == [round(result.low, 4), round(result.high, 4)]


def test_paired_speed_runs_its_minimum_blocks_even_on_a_tiny_budget(clock):
    result = paired_speed(_takes(clock, 0.001), _takes(clock, 0.001), budget_s=0.0, config_estimate_s=0.001)
    assert result.blocks == MIN_BLOCKS and result.speed == pytest.approx(1.0)


class _Switching:
    """Two synthetic runtimes whose first call after the other one ran costs ``penalty`` more (what
    switching between torch and ONNX Runtime does to caches and thread pools); each call advances
    ``clock`` by its time."""

    def __init__(self, clock: _Clock, config_s: float, baseline_s: float, penalty: float):
        self.clock = clock
        self.times = {"config": config_s, "baseline": baseline_s}
        self.penalty, self.last, self.order = penalty, None, []

    def call(self, side: str):
        def run():
            switched = self.last not in (None, side)
            self.last = side
            self.order.append(side)
            self.clock.now += self.times[side] * (1 + self.penalty * switched)

        return run


def test_paired_blocks_alternate_strictly_so_a_switching_cost_hits_every_block_alike(clock):
    # ABBA order made alternate blocks differ by the switching cost (a bimodal set of ratios that a
    # rank test across runs cannot separate from a real change); strict alternation does not: every
    # call follows a switch, so each block is 0.078 s / 0.039 s
    work = _Switching(clock, config_s=0.03, baseline_s=0.06, penalty=0.3)
    result = paired_speed(work.call("config"), work.call("baseline"), budget_s=0.0, config_estimate_s=0.03)
    assert work.order == ["baseline", "config"] * (1 + MIN_BLOCKS)  # a sizing call of each first, untimed
    assert result.block_ratios == pytest.approx([2.0] * MIN_BLOCKS)
    assert result.speed == pytest.approx(2.0) and (result.low, result.high) == pytest.approx((2.0, 2.0))
    assert result.seconds == pytest.approx(0.06 + 0.039 + MIN_BLOCKS * (0.078 + 0.039))


def test_each_side_of_a_block_is_sized_on_its_own(clock):
    work = _Switching(clock, config_s=0.002, baseline_s=0.03, penalty=0.0)
    result = paired_speed(work.call("config"), work.call("baseline"), budget_s=0.0, config_estimate_s=0.002,
                          baseline_estimate_s=0.03)  # known (the fp32 row's median): no sizing call
    assert (result.calls_per_block, result.baseline_calls_per_block) == (10, 1)  # 0.02 s a side at least
    assert work.order[:11] == ["baseline"] + ["config"] * 10 and len(work.order) == 11 * MIN_BLOCKS
    assert result.speed == pytest.approx(15.0)


def test_interleaved_baseline_pairs_each_round_with_the_block_before_it(clock):
    work = _Switching(clock, config_s=0.01, baseline_s=0.03, penalty=0.0)
    interleaved, config = InterleavedBaseline(work.call("baseline"), 0.03), work.call("config")
    rounds = []
    for _ in range(5):  # what benchmark.pedantic(config, setup=interleaved, rounds=5) does
        interleaved()
        start = time.perf_counter()
        config()
        rounds.append(time.perf_counter() - start)
    result = interleaved.result(rounds)
    assert work.order == ["baseline", "config"] * 5 and result.blocks == 5 and result.mode == "rounds"
    assert result.speed == pytest.approx(3.0) and result.seconds == pytest.approx(5 * 0.03)
    unknown = InterleavedBaseline(_takes(clock, 0.006))  # estimate unknown: the first block sizes itself
    unknown()
    unknown()
    # 0.02 s needs 4 calls of 6 ms (3 make 18 ms); the second block makes as many
    assert unknown.calls == 4 and unknown.times == pytest.approx([0.006, 0.006])
    assert unknown.seconds == pytest.approx(2 * 4 * 0.006)
    from compressors import CompressbenchError

    with pytest.raises(CompressbenchError, match="4 timed rounds but 5 baseline blocks"):
        interleaved.result(rounds[:4])


_TIME_CASE_TEST = """
import time
from types import SimpleNamespace

from bench.resources import Resources
from bench.timing import Timing


def _session(request, order, baseline_s):
    session = Timing(Resources(None, request.config))

    def baseline():
        order.append("b")
        time.sleep(baseline_s)

    session.baseline_call = lambda run: (baseline, "fp32")
    session.baseline_estimate = lambda run: None  # no fp32 row timed before: the blocks size themselves
    return session


def _run(order, seconds):
    def config():
        order.append("c")
        time.sleep(seconds)

    return SimpleNamespace(timed=config, args=(), case=SimpleNamespace(chain=SimpleNamespace(name="t")))


def test_slow_call_is_timed_interleaved_with_its_baseline(benchmark, request):
    order = []
    session, run = _session(request, order, 0.5), _run(order, 0.25)
    _, interleaved = session.time_case(run, benchmark)
    assert interleaved is not None and order == ["c"] + ["b", "c"] * 5  # an untimed call first, then blocks
    stats = benchmark.stats.stats
    speed = session.paired_speed(run, stats.median, list(stats.data), interleaved)
    assert speed["mode"] == "rounds" and speed["blocks"] == 5 and 1.7 < speed["ratio"] < 2.3, speed
    assert 2.4 < speed["seconds"] < 2.9  # 5 baseline calls: the time the pairing added
    spent = session.account.seconds  # the baseline's blocks between the rounds are pairing, not timed rounds
    assert 0.24 < spent["warmup"] < 0.4 and 1.2 < spent["timed"] < 1.6 and 2.4 < spent["paired"] < 2.9, spent


def test_fast_call_gets_calibrated_rounds_then_blocks(benchmark, request):
    order = []
    session, run = _session(request, order, 0.02), _run(order, 0.005)
    _, interleaved = session.time_case(run, benchmark)
    assert interleaved is None and "b" not in order and benchmark.stats.stats.rounds > 5
    stats = benchmark.stats.stats
    del order[:]
    speed = session.paired_speed(run, stats.median, list(stats.data))
    assert speed["mode"] == "blocks" and speed["blocks"] >= 5 and 3.0 < speed["ratio"] < 5.0, speed
    assert order[:7] == ["b", "c", "b", "c", "c", "c", "c"]  # sizing calls, then (baseline, 4 x config) blocks
    spent = session.account.seconds
    assert spent["timed"] > 0.5 and spent["paired"] > 5 * (0.02 + 4 * 0.005), spent
"""


@pytest.mark.slow
def test_time_case_interleaves_slow_calls_with_pytest_benchmark(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # timing on in the child
    pytester.makepyfile(test_time_case=_TIME_CASE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.slow
def test_competing_processes_mark_the_timing_contended():
    import os

    hog = "import time\nend = time.time() + 6\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        with ContentionMonitor(threads=1) as busy:
            _spin(1.0)
    finally:
        for process in hogs:
            process.kill()
            process.wait()
    assert busy.result["contended"] and "other processes used" in busy.result["reason"]
    assert busy.result["other_processes_cores"] > 0.5 and busy.result["process_cpu_s"] > 0
    assert set(busy.result) >= {"wall_s", "loadavg_1m", "cores", "threads", "reason"}


def test_a_window_too_short_for_cpu_time_ticks_is_not_judged_contended(monkeypatch):
    # psutil's CPU times tick in 1/100 s: 0.12 s of "other" time over a 10 ms window read 12 cores of 2
    busy = iter([100.0, 100.12])
    monkeypatch.setattr(ContentionMonitor, "_busy", staticmethod(lambda: next(busy)))
    # only the CPU-time rule is under test: the machine's own load average (other test workers) is not
    monkeypatch.setattr("compressors.machine.timing.os.getloadavg", lambda: (0.0, 0.0, 0.0))
    with ContentionMonitor(threads=1) as short:
        time.sleep(0.01)
    assert short.result["other_processes_cores"] > 2 and not short.result["contended"]


def test_the_fp32_median_sizes_only_its_own_scenario():
    # a batch-1 row sized on the batch-32 fp32 median made 1 baseline call of 11 ms per block
    from types import SimpleNamespace

    from bench.resources import Resources
    from bench.timing import Timing
    from compressors.evaluation.tasks import Scenario

    def run(technique, batch_size):
        case = SimpleNamespace(chain=SimpleNamespace(name=technique), model=SimpleNamespace(name="m"), tier="cpu",
                               scenario=Scenario(batch_size))
        return SimpleNamespace(case=case, timed=lambda: None, args=())

    session = Timing(Resources(None, None))
    interleaved = InterleavedBaseline(_sleep(0.001), 0.001)
    for _ in range(5):
        interleaved()
    session.paired_speed(run("fp32", 32), 0.28, [0.28] * 5, interleaved)
    assert session.baseline_estimate(run("int8", 32)) == 0.28
    assert session.baseline_estimate(run("int8", 1)) is None and session.baseline_estimate(run("fp32", 32)) is None


# ------------------------------------------------------------------ where the run's time goes


def test_time_account_counts_each_second_once(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("compressors.machine.timing.time.perf_counter", clock)
    account = TimeAccount()
    with account.phase("measure"):  # a measurement that first builds the model it measures
        clock.now = 1.0
        with account.phase("build"):
            clock.now = 4.0
        clock.now = 6.0
    before = account.snapshot()
    with account.phase("timed"):
        clock.now = 8.5
    account.add("paired", 1.5)
    assert account.seconds["measure"] == 3.0 and account.seconds["build"] == 3.0
    assert account.since(before) == {"timed": 2.5, "paired": 1.5}  # one test's share, zeros left out
    with pytest.raises(ValueError, match="unknown phase 'timing'; valid: build, pull, push, measure"):
        with account.phase("timing"):
            pass


def test_time_breakdown_states_what_the_pairing_added():
    tests = [{"build": 100.0, "timed": 300.0, "paired": 200.0}, {"measure": 50.0, "warmup": 10.0, "paired": 100.0}]
    breakdown = time_breakdown([*tests, {"retime": 20.0}], wall_s=800.0)
    assert breakdown["phases_s"]["paired"] == 300.0 and breakdown["phases_s"]["retime"] == 20.0
    assert breakdown["other_s"] == 800.0 - 780.0 and breakdown["paired_over_rest"] == 0.6  # 300 / (800 - 300)
    line = format_breakdown(breakdown)
    assert line.startswith("time: 800 s in all: building (or reading the cache) 100 s, isolated measurements 50 s, "
                           "warm-up calls 10 s")
    assert "paired fp32 blocks 300 s (+60% over the rest of the run)" in line and line.endswith("reporting)")
    assert "loading" not in line  # phases that took no time are left out
    xdist = time_breakdown(tests, wall_s=400.0, workers=2)  # parallel: parts of no single wall time
    assert "other_s" not in xdist and "paired_over_rest" not in xdist
    assert format_breakdown(xdist).startswith("time: 400 s in all, 2 workers; summed over them: building (or "
                                              "reading the cache) 100 s")
    assert "paired" not in format_breakdown(time_breakdown([{"build": 1.0}], wall_s=2.0, workers=2))


_ACCOUNTED_SUITE = """
def test_a(benchmark, record_property):
    benchmark(sum, [1, 2])
    record_property("compressbench_time", {"build": 2.0, "timed": 1.0, "paired": 0.5})

def test_b(benchmark, record_property):
    benchmark(sum, [1, 2])
    record_property("compressbench_time", {"timed": 1.0, "paired": 0.25})
"""


@pytest.mark.slow
def test_the_run_says_and_saves_where_its_time_went(pytester, monkeypatch):
    from tests.conftest import run_saved_suite

    result, storage = run_saved_suite(pytester, monkeypatch, _ACCOUNTED_SUITE, "acct")
    assert result.ret == 0
    (saved,) = storage.glob("*/0001_acct.json")
    spent = json.loads(saved.read_text())["compressbench"]["time_s"]
    assert spent["phases_s"] == {"build": 2.0, "pull": 0.0, "push": 0.0, "measure": 0.0, "load": 0.0, "inputs": 0.0,
                                 "warmup": 0.0, "timed": 2.0, "paired": 0.8, "retime": 0.0}  # rounded to 0.1 s
    assert spent["wall_s"] > 0 and spent["workers"] == 1
    result.stdout.fnmatch_lines(["time: * s in all: building (or reading the cache) 2 s, timed rounds 2 s, "
                                 "paired fp32 blocks 1 s (+*%*"])


def test_a_benchmark_that_stops_early_still_records_its_time():
    from types import SimpleNamespace

    from bench.harness import BenchSession, run_benchmark

    session = BenchSession(None, None)

    def prepare_timed(case):  # a second spent building, then skipped: the second was still spent
        session.account.add("build", 1.0)
        pytest.skip("needs a GPU")

    session.prepare_timed = prepare_timed
    recorded = {}
    with pytest.raises(pytest.skip.Exception):
        run_benchmark(SimpleNamespace(id="m-t-cpu-bs1"), session, None, lambda k, v: recorded.setdefault(k, v))
    assert recorded["compressbench_time"]["build"] >= 1.0
