"""Causal language models on WikiText-2: one test per model x technique x device x scenario.

Each configuration has two timed benchmarks with ids of their own, so ``--benchmark-compare``
compares like with like: ``-prefill512`` (one forward pass over a fixed 512-token window,
batch 1) and ``-gen32`` (greedy generation of 32 new tokens from a fixed prompt, batch 1;
``extra_info.per_token_s`` = median / 32). Perplexity, size and memory come from one
isolated process per configuration and are the same in both (compressors/evaluation/tasks.py).
"""

from bench.harness import run_benchmark


def test_language_model(lm_case, bench_session, benchmark, record_property):
    run_benchmark(lm_case, bench_session, benchmark, record_property)
