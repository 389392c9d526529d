"""Causal language models on WikiText-2: one test per model x technique x device x scenario.

Each configuration has two timed benchmarks with ids of their own, so ``--benchmark-compare``
compares like with like: ``-prefill512`` (one forward pass over a fixed 512-token window,
batch 1) and ``-gen32`` (greedy generation of 32 new tokens from a fixed prompt, batch 1;
``extra_info.per_token_s`` = median / 32). Perplexity, size and memory come from one
isolated process per configuration and are the same in both.
"""

import pytest

from reports.runs import latency_summary


def test_language_model(lm_case, bench_session, benchmark, record_property):
    case = lm_case
    results = bench_session.lm_results(case)  # builds (cached), measures perplexity + memory in a fresh process
    predictor = bench_session.predictor(case)
    bench_session.check_placement(case, results, predictor)  # a GPU case partly on the CPU: --on-fallback
    timed, args = bench_session.lm_timed_call(case, predictor)  # inputs prepared here, untimed

    verdicts = bench_session.verdicts(case, results)
    benchmark.extra_info.update(results)
    benchmark.extra_info["timed_placement"] = predictor.placement()
    benchmark.group = f"{case.model.name}-{case.tier}-{case.scenario.name}"
    output = benchmark(timed, *args)
    if case.scenario.timed == "generate":
        generated = int(output.shape[1]) - results["timing_input"]["shape"][1]
        assert generated == case.scenario.new_tokens, f"generated {generated} tokens, not {case.scenario.new_tokens}"
    median = benchmark.stats.stats.median if benchmark.stats else None  # None when timing is off (xdist)
    if benchmark.stats:
        benchmark.extra_info["latency_s"] = latency_summary(benchmark.stats.stats.data)
        if case.scenario.timed == "generate":
            benchmark.extra_info["per_token_s"] = median / case.scenario.new_tokens

    record_property("compressbench", {**results, "median_s": median,
                                      "per_token_s": benchmark.extra_info.get("per_token_s")})
    failed = [str(v) for v in verdicts if not v.ok]
    if failed:
        pytest.fail(f"{case.id} over budget: " + "; ".join(failed), pytrace=False)
