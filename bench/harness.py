"""Wiring between the compressors library and pytest: one benchmark test, and the session it runs in.

One :class:`BenchSession` per pytest session (per xdist worker) composes the three jobs of a test:
:mod:`bench.resources` (build, measure and load once, memoised), :mod:`bench.rows` (the result row,
its placement check and its budget verdicts) and :mod:`bench.timing` (time the task's call, pair it
with fp32, re-time it at the end of the session). :func:`run_benchmark` is a test's body.
"""

from __future__ import annotations

from bench.cases import Case
from bench.resources import Resources
from bench.rows import NearChanceWarning, Rows, session_budgets
from bench.timing import PreparedCase, Timing
from compressors.builders.context import BuildContext
from compressors.machine.timing import ContentionMonitor, InterleavedBaseline

__all__ = ["BenchSession", "NearChanceWarning", "PreparedCase", "run_benchmark"]


class BenchSession:
    """The session's ``resources``, ``rows`` and ``timing``, and the configurations timed so far
    (``cases``, by test id, for the end-of-session re-timing)."""

    def __init__(self, ctx: BuildContext, pytest_config):
        self.resources = Resources(ctx, pytest_config)
        self.rows = Rows(self.resources, session_budgets(pytest_config))
        self.timing = Timing(self.resources)
        self.cases: dict[str, Case] = {}

    @property
    def account(self):
        """Where the session's time goes (the run's closing "time:" line)."""
        return self.resources.account

    def check_data(self, models) -> None:
        self.resources.check_data(models)

    def prepare(self, case: Case) -> PreparedCase:
        """Build (cached), measure quality and memory in a fresh process, load the predictor, check
        its placement and prepare the timed call's inputs: everything before timing, untimed."""
        res = self.resources
        row = self.rows.result_row(case)
        predictor = res.predictor(case)
        row = self.rows.check_placement(case, row, predictor)  # a GPU case partly on the CPU: --on-fallback
        timing_input = res.timing_input(case)
        with self.account.phase("load"):
            prepared = predictor.prepare(timing_input)  # untimed; compiles a torch.compile-d model
        try:
            timed, args = case.task.timed_call(predictor, prepared, case.scenario)
        except ValueError as exc:
            raise ValueError(f"{case.chain.name}: {exc}") from None
        row, budget, verdicts = self.rows.verdicts(case, row)
        placement = row.placement.timed_placement or {}
        threads = placement.get("torch_threads") or placement.get("intra_op_threads") or None
        return PreparedCase(case, row, predictor, timed, args, timing_input, budget, verdicts, threads)

    def prepare_timed(self, case: Case) -> PreparedCase:
        """:meth:`prepare`, its timed call as plugins wrap it (the ``pytest_compressbench_timed_call`` hook)."""
        run = self.prepare(case)
        run.timed = self.timing.hooked(case, run.timed)
        return run

    def finish(self, run: PreparedCase, benchmark, output, record_property, contention: dict | None,
               interleaved: InterleavedBaseline | None = None) -> None:
        """After timing: check the output, add latency (per-round times, the paired speed ratio vs
        fp32, the contention record) to the row, save it in ``extra_info``, hand it to the terminal
        summary, and judge it against its budget (pass, fail, or a declared expected failure)."""
        case = run.case
        case.task.check_output(output, run.timing_input, case.scenario)
        row = run.row
        if benchmark.stats:  # None when timing is off (xdist, --benchmark-disable)
            row = self.timing.with_latency(run, benchmark.stats.stats, contention, interleaved)
        benchmark.extra_info.update(row.to_extra_info())
        # plain data: user properties travel to the xdist controller (the terminal summary rebuilds the row)
        record_property("compressbench", {"extra_info": row.to_extra_info(), "median_s": row.latency.median_s})
        self.rows.judge(case, run.budget, run.verdicts)

    def retime(self, config_id: str, median_s: float, round_s: list[float]) -> dict:
        """Pair the configuration timed as ``config_id`` with fp32 again, in a later time window (the
        end of the session, for a latency regression flagged against the compared run; see
        :meth:`bench.timing.Timing.pair_again`), its timed call wrapped as in the test. Returns
        ``{"speed_vs_fp32", "contention"}``, shaped as in the test's row."""
        with self.account.phase("retime"):
            return self.timing.pair_again(self.prepare_timed(self.cases[config_id]), median_s, round_s)


def run_benchmark(case: Case, session: BenchSession, benchmark, record_property) -> None:
    """One benchmark test: prepare untimed, time the task's call (watching for contention), pair it
    with fp32, record and judge."""
    before = session.account.snapshot()
    try:
        run = session.prepare_timed(case)
        benchmark.group = case.task.group(case.model.name, case.tier, case.scenario)
        session.cases[case.id] = case  # for the end-of-session re-timing (:meth:`BenchSession.retime`)
        with ContentionMonitor(run.threads) as monitor:
            output, interleaved = session.timing.time_case(run, benchmark)
        session.finish(run, benchmark, output, record_property, monitor.result, interleaved)
    finally:  # skipped, failed or passed: its time counts (conftest.py sums it for the run's "time:" line)
        record_property("compressbench_time", session.account.since(before))
