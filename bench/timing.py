"""Timing a configuration: its timed call under pytest-benchmark, the fp32 baseline it is paired with,
the paired speed ratio, the latency part of its row, and the end-of-session re-timing.

Only the task's timed call is timed (never building, loading or tokenizing: those are
:mod:`bench.resources`' and were done before). A plugin may wrap the timed call through the
``pytest_compressbench_timed_call`` hook (:mod:`bench.plugin.hookspecs`; the test-only
:mod:`bench.fault_injection` slows one configuration that way).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from bench import budgets as budgets_mod
from bench.cases import Case
from bench.plugin.hookspecs import TIMED_CALL_HOOK
from bench.plugin.options import option_value
from bench.resources import Resources
from compressors.evaluation.tasks import BASELINE
from compressors.execution.runtime import Predictor
from compressors.machine.timing import MIN_BLOCKS, ContentionMonitor, InterleavedBaseline, paired_speed
from compressors.records.results import ResultRow, latency_summary


@dataclasses.dataclass
class PreparedCase:
    """Everything a test needs around its timed call: built, measured and loaded, inputs prepared."""

    case: Case
    row: ResultRow
    predictor: Predictor
    timed: Callable
    args: tuple
    timing_input: dict[str, np.ndarray]
    budget: budgets_mod.Budget
    verdicts: list
    threads: int | None = None  # threads the timed runtime uses (for the contention rule)


def _fp32_median_key(case: Case) -> tuple:
    return (case.model.name, case.tier, case.scenario.suffix)  # suffix: bs1, bs32, bs1-gen32, ...


class Timing:
    """Times prepared cases with the session's ``resources`` (the baseline's predictor, the time account,
    the run's options)."""

    def __init__(self, resources: Resources):
        self.resources = resources
        self._warm: set[tuple] = set()  # baselines already called once in this process (untimed)
        self._fp32_medians: dict[tuple, float] = {}  # fp32 rows timed so far: their medians

    @property
    def account(self):
        return self.resources.account

    def hooked(self, case: Case, call: Callable) -> Callable:
        """``call``, or what a plugin's ``pytest_compressbench_timed_call`` returns in its place."""
        hook = getattr(getattr(self.resources.pytest_config, "hook", None), TIMED_CALL_HOOK, None)
        wrapped = hook(config=self.resources.pytest_config, case=case, call=call) if hook is not None else None
        return call if wrapped is None else wrapped

    @staticmethod
    def _torch_threads() -> int:
        import torch

        return torch.get_num_threads()

    def baseline_call(self, run: PreparedCase) -> tuple[Callable[[], object], str]:
        """What ``run`` is paired with, warm: the fp32 baseline's timed call (same tier, same input), or
        for fp32 itself a fixed reference workload (the probe's fp32 GEMM) whose ratio moves with fp32's
        own speed, not with the machine's (what comparisons of fp32 use)."""
        case = run.case
        if case.chain.name == BASELINE:
            from compressors.machine.kernels import KERNELS, PROBE_SHAPE

            call = KERNELS["fp32-gemm"].setup(PROBE_SHAPE, run.threads or self._torch_threads())
            call()
            return call, "fp32-gemm reference"
        baseline_case = case.with_chain(BASELINE)
        if case.device == "cuda":  # not memoised: one model on the GPU at a time stays true for the next test
            baseline = self.resources.fresh_predictor(baseline_case)
        else:
            baseline = self.resources.predictor(baseline_case)
        timed, args = case.task.timed_call(baseline, baseline.prepare(run.timing_input), case.scenario)
        key = (baseline_case.id, case.device)
        if key not in self._warm:  # its first call in this process: untimed
            with self.account.phase("warmup"):
                timed(*args)
            self._warm.add(key)
        return (lambda: timed(*args)), "fp32"

    def slow_call_s(self) -> float:
        """A call at least this long gets only pytest-benchmark's minimum rounds anyway
        (``--benchmark-max-time`` / ``--benchmark-min-rounds``): time it interleaved with its baseline."""
        config = self.resources.pytest_config
        max_time = float(option_value(config, "benchmark_max_time"))
        return max_time / max(1, int(option_value(config, "benchmark_min_rounds")))

    def baseline_estimate(self, run: PreparedCase) -> float | None:
        """The fp32 baseline's median for this case's model, tier and scenario, when its row was timed
        earlier in this run (sizes the pairing's blocks without an extra call)."""
        if run.case.chain.name == BASELINE:
            return None
        return self._fp32_medians.get(_fp32_median_key(run.case))

    def time_case(self, run: PreparedCase, benchmark) -> tuple[object, InterleavedBaseline | None]:
        """Time ``run`` with pytest-benchmark. One untimed call first (warm-up; sizes it). A fast call
        gets pytest-benchmark's own calibrated rounds (paired with fp32 afterwards, in
        :meth:`paired_speed`); a slow one (:meth:`slow_call_s`) gets pytest-benchmark's minimum rounds
        with the baseline run before each, untimed by pytest-benchmark (the pairing then costs only
        the baseline's calls)."""
        if benchmark.disabled:  # xdist or --benchmark-disable: pytest-benchmark runs it once, untimed
            with self.account.phase("warmup"):  # what it is then: one untimed call
                return benchmark(run.timed, *run.args), None
        start = time.perf_counter()
        with self.account.phase("warmup"):
            run.timed(*run.args)
        if time.perf_counter() - start < self.slow_call_s():
            with self.account.phase("timed"):
                return benchmark(run.timed, *run.args), None
        call, _ = self.baseline_call(run)
        interleaved = InterleavedBaseline(call, self.baseline_estimate(run))  # sizes itself when unknown

        def setup():  # the baseline's blocks between the rounds count as pairing, not as timed rounds
            with self.account.phase("paired"):
                interleaved()

        rounds = max(MIN_BLOCKS, int(option_value(self.resources.pytest_config, "benchmark_min_rounds")))
        with self.account.phase("timed"):
            return benchmark.pedantic(run.timed, args=run.args, setup=setup, rounds=rounds), interleaved

    def paired_speed(self, run: PreparedCase, median_s: float, round_s: list[float],
                     interleaved: InterleavedBaseline | None = None) -> dict:
        """The configuration vs fp32 (same tier, same timed call and input) in this time window: from
        the interleaved rounds of a slow call, else alternated in blocks after pytest-benchmark's
        timing (compressors.machine.timing.paired_speed), about a quarter of the time pytest-benchmark spent."""
        fp32 = run.case.chain.name == BASELINE
        if interleaved is not None:
            paired, against = interleaved.result(round_s), ("fp32-gemm reference" if fp32 else "fp32")
        else:
            with self.account.phase("paired"):
                call, against = self.baseline_call(run)
                paired = paired_speed(lambda: run.timed(*run.args), call, budget_s=max(0.5, 0.25 * sum(round_s)),
                                      config_estimate_s=median_s, baseline_estimate_s=self.baseline_estimate(run))
        if fp32:
            self._fp32_medians[_fp32_median_key(run.case)] = median_s
            return {"ratio": 1.0, "ci95": [1.0, 1.0], "blocks": 0, "seconds": round(paired.seconds, 2),
                    "method": "the baseline itself", "reference": paired.to_dict(against=against)}
        return paired.to_dict(against=against)

    def with_latency(self, run: PreparedCase, stats, contention: dict | None,
                     interleaved: InterleavedBaseline | None = None) -> ResultRow:
        """``run``'s row with its latency: pytest-benchmark's ``stats`` (per-round times), the paired
        speed ratio vs fp32 and the contention record (marked contended when the paired blocks were)."""
        case, data = run.case, list(stats.data)
        if interleaved is not None:  # paired inside the timed rounds, under the timing's own monitor
            speed = self.paired_speed(run, stats.median, data, interleaved)
        else:
            with ContentionMonitor(run.threads) as pairing:
                speed = self.paired_speed(run, stats.median, data)
            if contention is not None and pairing.result["contended"] and not contention["contended"]:
                contention = {**contention, "contended": True, "reason": "during the paired fp32 blocks: "
                              + pairing.result["reason"]}
        config = self.resources.artifact_config(case)
        return run.row.replace(latency={
            "median_s": stats.median, "latency_s": latency_summary(data),
            "useful_ops": None if config is None else case.task.useful_ops(config, run.timing_input, case.scenario),
            "kernel": (case.chain.kernels or ("fp32-gemm",))[0],
            "round_s": [float(f"{t:.6g}") for t in data], "speed_vs_fp32": speed, "contention": contention,
            **case.task.latency_extras(stats.median, case.scenario)})

    def pair_again(self, run: PreparedCase, median_s: float, round_s: list[float]) -> dict:
        """Pair ``run`` with fp32 again, in a later time window: blocks as in :meth:`paired_speed`, sized
        on the test's own ``median_s`` and ``round_s``, under a contention monitor. Returns
        ``{"speed_vs_fp32", "contention"}``, shaped as in the test's row."""
        run.timed(*run.args)  # warm again: other configurations ran in between
        with ContentionMonitor(run.threads) as monitor:
            speed = self.paired_speed(run, median_s, round_s)
        return {"speed_vs_fp32": speed, "contention": monitor.result}
