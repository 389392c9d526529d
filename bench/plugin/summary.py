"""What the run prints at the end: the results table of every finished configuration with its legend,
contended timings, where an interrupted run's rows were kept, the remote cache's line and the ``time:`` line;
and errors raised on purpose shown as their one-line message instead of a traceback."""

from __future__ import annotations

import pytest

from bench.plugin.record import run_time
from bench.plugin.state import run_state
from compressors import CompressbenchError


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = run_state(config)
    if state is None:
        return
    tr, rows = terminalreporter, state.rows
    if state.partial_file is not None:
        tr.write_line(f"compressbench: run interrupted; the {len(rows)} finished configuration(s) "
                      f"are kept in {state.partial_file} (marked partial)", yellow=True)
    if rows:
        from compressors.records.tables import format_table, terminal_legend

        tr.section("compressbench results")
        for line in format_table(rows):
            tr.write_line(line)
        if any(row.latency.median_s is None for row in rows):
            tr.write_line(
                "median ms '-': timing disabled (pytest-xdist or --benchmark-disable); run without -n for timings."
            )
        contended = [row for row in rows if row.latency.contended]
        if contended:
            tr.write_line(f"WARNING: {len(contended)} timing(s) contended (another process competed for the CPU; "
                          "their speeds are not comparable, compare tools call them inconclusive):", yellow=True)
            for row in contended:
                tr.write_line(f"  {row.config_id}: {row.latency.contention.get('reason')}", yellow=True)
        tr.write_line(terminal_legend())
    remote = state.remote
    if remote is not None:
        tr.write_line(remote.summary_line(), yellow=not remote.enabled)
    record = state.search_record
    if record is not None:
        from bench.plugin.search import search_summary_lines

        for line in search_summary_lines(record):
            tr.write_line(line, yellow=line.startswith("search: no configuration"))
    breakdown = run_time(config)  # also when every benchmark was skipped or failed: the time was spent
    search_part = None
    if record is not None:
        from bench.plugin.search import search_time_part

        search_part = search_time_part(record)
    if breakdown is not None:
        from compressors.machine.timing import format_breakdown

        if record is not None and "other_s" in breakdown:  # the search ran before the tests: not "other"
            breakdown = {**breakdown, "other_s": max(0.0, breakdown["other_s"] - record.get("seconds", 0.0))}
        tr.write_line(format_breakdown(breakdown) + (f"; {search_part}" if search_part else ""))
    elif search_part:
        tr.write_line(f"time: {search_part}")


# Errors raised on purpose carry a message meant for the user: show it without a traceback.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, CompressbenchError) and report.failed:
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
