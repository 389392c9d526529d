"""Sequence classification on SST-2: one test per model x technique x device x batch size."""

import pytest

from reports.runs import latency_summary


def test_classification(classification_case, bench_session, benchmark, record_property):
    case = classification_case
    results = bench_session.results(case)  # builds (cached) and measures accuracy + memory in a fresh process
    predictor = bench_session.predictor(case)
    bench_session.check_placement(case, results, predictor)  # a GPU case partly on the CPU: --on-fallback
    inputs = predictor.prepare(bench_session.timing_batch(case))  # untimed; compiles a torch.compile-d model

    verdicts = bench_session.verdicts(case, results)
    benchmark.extra_info.update(results)
    benchmark.extra_info["timed_placement"] = predictor.placement()  # the timed process (compile time included)
    benchmark.group = f"{case.model.name}-{case.tier}-bs{case.batch_size}"
    benchmark(predictor.run, inputs)
    if benchmark.stats:  # None when timing is off (xdist, --benchmark-disable)
        benchmark.extra_info["latency_s"] = latency_summary(benchmark.stats.stats.data)  # p50/p90/p99 per round

    record_property("compressbench", {**results, "median_s": benchmark.stats.stats.median if benchmark.stats else None})
    failed = [str(v) for v in verdicts if not v.ok]
    if failed:
        pytest.fail(f"{case.id} over budget: " + "; ".join(failed), pytrace=False)
