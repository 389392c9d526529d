"""Timing helpers around pytest-benchmark's own timing: paired speed ratios and contention.

* :func:`paired_speed`: the configuration and the fp32 baseline alternated in short blocks, in the
  same time window, on the same batch (ABBA order, so a drift in machine speed hits both alike);
  ``speed_vs_fp32`` is the median of the per-block ratios fp32 / configuration with a 95%
  bootstrap interval. A ratio of two medians taken minutes apart on a shared machine is not.
* :class:`ContentionMonitor`: while timing, how much CPU *other* processes used (system busy time
  minus this process's CPU time, psutil), the load average and this process's CPU vs wall time;
  ``contended`` when others took a meaningful share, so a slow median is not mistaken for a
  regression.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

from compressors import CompressbenchError
from compressors.stats import bootstrap_median_ci

MIN_BLOCKS, MAX_BLOCKS = 6, 20
MIN_BLOCK_SIDE_S = 0.02  # each side of a block runs at least this long (timer resolution, call jitter)
# Another process counts as competing when it used this many cores on average while we timed
# (0.3 of a core: ~15% of a 2-core machine), or when the 1-minute load exceeds our threads + 1.
CONTENDED_OTHER_CORES = 0.3


@dataclasses.dataclass(frozen=True)
class PairedSpeed:
    speed: float  # fp32 time / configuration time (> 1: faster than fp32)
    low: float
    high: float
    blocks: int
    calls_per_block: int
    seconds: float  # wall time the pairing added
    block_ratios: tuple[float, ...] = ()  # every block's ratio, for rank tests across runs

    def to_dict(self, against: str = "fp32") -> dict:
        return {"ratio": round(self.speed, 4), "ci95": [round(self.low, 4), round(self.high, 4)],
                "blocks": self.blocks, "calls_per_block": self.calls_per_block, "seconds": round(self.seconds, 2),
                "block_ratios": [round(r, 4) for r in self.block_ratios], "against": against,
                "method": f"median of per-block {against}/config time ratios, ABBA-alternated blocks; "
                          "95% percentile bootstrap interval"}


def _time(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def paired_speed(config_call: Callable[[], object], baseline_call: Callable[[], object], budget_s: float,
                 config_estimate_s: float) -> PairedSpeed:
    """Alternate ``config_call`` and ``baseline_call`` (both already prepared and warm) in blocks.

    ``budget_s``: the wall time the pairing may take (at least :data:`MIN_BLOCKS` blocks run
    anyway); ``config_estimate_s``: the configuration's median from pytest-benchmark, to size
    the blocks.
    """
    start = time.perf_counter()
    baseline_estimate = _time(baseline_call, 1)  # warm, and sized
    slowest = max(config_estimate_s, baseline_estimate, 1e-6)
    calls = max(1, math.ceil(MIN_BLOCK_SIDE_S / min(config_estimate_s, baseline_estimate, slowest)))
    block_s = calls * (config_estimate_s + baseline_estimate)
    blocks = int(min(MAX_BLOCKS, max(MIN_BLOCKS, budget_s // max(block_s, 1e-9))))
    ratios = []
    for index in range(blocks):
        if index % 2 == 0:
            config_s, baseline_s = _time(config_call, calls), _time(baseline_call, calls)
        else:
            baseline_s, config_s = _time(baseline_call, calls), _time(config_call, calls)
        ratios.append(baseline_s / config_s)
    median, low, high = bootstrap_median_ci(ratios)
    return PairedSpeed(median, low, high, blocks, calls, time.perf_counter() - start, tuple(ratios))


class ContentionMonitor:
    """Context manager: did other processes compete for the CPU while this block ran?"""

    def __init__(self, threads: int | None = None):
        self.threads = threads or os.cpu_count() or 1
        self.result: dict | None = None

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def __enter__(self) -> ContentionMonitor:
        import psutil

        self._process = psutil.Process()
        self._load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self._busy0 = self._busy()
        times = self._process.cpu_times()
        self._proc0 = times.user + times.system
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall0
        times = self._process.cpu_times()
        process_cpu = times.user + times.system - self._proc0
        others = max(0.0, self._busy() - self._busy0 - process_cpu)
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cores = os.cpu_count() or 1
        other_cores = others / wall if wall > 0 else 0.0
        reasons = []
        if other_cores > CONTENDED_OTHER_CORES:
            reasons.append(f"other processes used {other_cores:.2f} of {cores} cores")
        if load1 is not None and load1 > self.threads + 1:
            reasons.append(f"1-minute load {load1:.2f} > {self.threads} threads + 1")
        self.result = {
            "wall_s": round(wall, 3), "process_cpu_s": round(process_cpu, 3),
            "other_processes_cores": round(other_cores, 3), "cores": cores, "threads": self.threads,
            "loadavg_1m": [None if self._load0 is None else round(self._load0, 2),
                           None if load1 is None else round(load1, 2)],
            "contended": bool(reasons), "reason": "; ".join(reasons) or None,
        }


class TimeLimitExceeded(CompressbenchError):
    """A configuration's build or measurement ran past its guard (``--max-build-seconds`` /
    ``--max-measure-seconds``)."""


class time_limit:  # noqa: N801  (used as a context manager, like contextlib's)
    """Raise :class:`TimeLimitExceeded` in the main thread when the block runs past ``seconds``.

    Uses ``SIGALRM`` (POSIX, main thread): the exception surfaces at the next Python bytecode, so a
    long native call finishes first; everything the block was writing is cleaned up by its own
    handlers (the artifact cache removes a half-built staging folder on any exception). Elsewhere, or
    with ``seconds`` None, it does nothing.
    """

    def __init__(self, seconds: float | None, what: str, option: str):
        self.seconds, self.what, self.option = seconds, what, option
        self._previous = None

    def _expired(self, signum, frame):
        raise TimeLimitExceeded(f"{self.what} stopped after {self.seconds:g} s ({self.option}={self.seconds:g}); "
                                f"raise {self.option} to let it finish")

    def __enter__(self):
        import signal
        import threading

        if (self.seconds is None or not hasattr(signal, "setitimer")
                or threading.current_thread() is not threading.main_thread()):
            self.seconds = None
            return self
        self._previous = signal.signal(signal.SIGALRM, self._expired)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.seconds is not None:
            import signal

            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        return False
