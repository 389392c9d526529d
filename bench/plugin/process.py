"""The benchmarking process itself: its allocator, its threads under pytest-xdist, and SIGTERM ending the
session like Ctrl-C (so finished results are kept)."""

from __future__ import annotations

import functools
import os

import pytest

from bench.plugin.state import run_state

# The SIGTERM handler this session replaced, put back when it ends (an in-process pytester run inside
# another session must not leave its handler behind).
_PREVIOUS_SIGTERM = pytest.StashKey[object]()


def pytest_configure(config):
    from compressors.machine.allocator import settle_malloc

    state = run_state(config)
    state.malloc = settle_malloc(state.settings.malloc)
    if hasattr(config, "workerinput"):
        split_threads_among_workers(int(config.workerinput.get("workercount") or 1))
    else:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            config.stash[_PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM,
                                                            functools.partial(_sigterm_to_interrupt, state))


def split_threads_among_workers(workers: int) -> int | None:
    """Under pytest-xdist, each of ``workers`` processes gets ``usable cores // workers`` PyTorch
    threads (at least 1), unless ``OMP_NUM_THREADS`` says otherwise; set in ``OMP_NUM_THREADS`` too,
    so the isolated measurement processes a worker starts inherit it. Without it every worker runs
    as many threads as the machine has cores: two MiniLM trainings side by side on 2 cores made 0.85
    steps/s together with 2 threads each, 1.98 with 1 thread each, against 1.48 for one alone
    (AMD EPYC Zen 3, AVX2). Returns the threads set, or None when the user's OMP_NUM_THREADS stands."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    from compressors.machine.hardware import detect

    cpu = detect().cpu
    cores = min(count for count in (cpu.physical_cores, cpu.usable_threads, cpu.threads) if count)
    threads = max(1, cores // max(1, workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads


def _sigterm_to_interrupt(state, signum, frame):
    """SIGTERM (``timeout``, a cancelled CI job) ends the session like Ctrl-C: finished results are kept
    and marked partial, the measurement process dies with us, temporary folders are removed."""
    state.interrupted = "SIGTERM"
    raise KeyboardInterrupt


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import signal
    import threading

    previous = config.stash.get(_PREVIOUS_SIGTERM, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
