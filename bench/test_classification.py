"""Sequence classification on SST-2: one test per model x technique x device x batch size.

Accuracy (full dev split), size and memory come from one isolated process per configuration;
the timed call is one forward pass on a fixed batch of dev sentences (bench/harness.py).
"""

from bench.harness import run_benchmark


def test_classification(classification_case, bench_session, benchmark, record_property):
    run_benchmark(classification_case, bench_session, benchmark, record_property)
