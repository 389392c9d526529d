"""Timing helpers around pytest-benchmark's own timing: paired speed ratios and contention.

* :func:`paired_speed`: the configuration and the fp32 baseline alternated in short blocks, in the
  same time window, on the same batch; ``speed_vs_fp32`` is the median of the per-block ratios
  fp32 / configuration with a 95% bootstrap interval. A ratio of two medians taken minutes apart on
  a shared machine is not. Strict alternation (baseline, config, baseline, config, ...): the first
  call after switching runtimes is slower (caches, the other runtime's threads), and this way every
  block pays it alike; the ABBA order used before made alternate blocks differ by it (onnx-int8 at
  batch 32 on a 2-core Zen 4: 3.3 vs 2.75, which hid a 25% slowdown from the rank test).
* :class:`InterleavedBaseline`: the same pairing for slow calls (0.2 s and more by default: the
  language models' generation and prefill), at no extra cost on the configuration's side: the
  baseline runs in pytest-benchmark's untimed ``setup`` before each round, so every round of the
  configuration is one block's other half.
* :class:`TimeAccount`: where a run's wall time goes (building, isolated measurements, loading,
  warm-up, pytest-benchmark's timed rounds, the paired fp32 blocks), so every run states what the
  pairing added and what a cold run spent building, on the machine it ran on.
* :class:`ContentionMonitor`: while timing, how much CPU *other* processes used (system busy time
  minus this process's CPU time, psutil), the load average and this process's CPU vs wall time;
  ``contended`` when others took a meaningful share, so a slow median is not mistaken for a
  regression.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping

from compressors import CompressbenchError
from compressors.records.stats import bootstrap_median_ci

# 5 blocks a side is the fewest with which a one-sided Mann-Whitney test across two runs can reach
# p < 0.01 (5 vs 5: smallest p = 1/252); more when the budget allows.
MIN_BLOCKS, MAX_BLOCKS = 5, 20
MIN_BLOCK_SIDE_S = 0.02  # each side of a block runs at least this long (timer resolution, call jitter)
# Another process counts as competing when it used this many cores on average while we timed
# (0.3 of a core: ~15% of a 2-core machine), or when the 1-minute load exceeds our threads + 1.
CONTENDED_OTHER_CORES = 0.3
# CPU times tick in 1/100 s: over a shorter window the other-process share is noise (a 10 ms window
# read 12 "cores" of 2), so it is not judged there; the load average still is.
MIN_JUDGED_WALL_S = 0.5
METHOD = ("median of per-block {against}/config time ratios, the two alternated ({against}, config, {against}, ...) "
          "in one time window; 95% percentile bootstrap interval")


@dataclasses.dataclass(frozen=True)
class PairedSpeed:
    speed: float  # fp32 time / configuration time (> 1: faster than fp32)
    low: float
    high: float
    blocks: int
    calls_per_block: int  # the configuration's calls per block
    seconds: float  # wall time the pairing added
    block_ratios: tuple[float, ...] = ()  # every block's ratio, for rank tests across runs
    baseline_calls_per_block: int = 1
    mode: str = "blocks"  # "blocks": after pytest-benchmark's timing; "rounds": inside its rounds

    def to_dict(self, against: str = "fp32") -> dict:
        return {"ratio": round(self.speed, 4), "ci95": [round(self.low, 4), round(self.high, 4)],
                "blocks": self.blocks, "calls_per_block": self.calls_per_block,
                "baseline_calls_per_block": self.baseline_calls_per_block, "mode": self.mode,
                "seconds": round(self.seconds, 2), "block_ratios": [round(r, 4) for r in self.block_ratios],
                "against": against, "method": METHOD.format(against=against)}


def _time(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def calls_for(estimate_s: float) -> int:
    """Calls one side of a block makes so that it lasts at least :data:`MIN_BLOCK_SIDE_S`."""
    return max(1, math.ceil(MIN_BLOCK_SIDE_S / max(estimate_s, 1e-6)))


def paired_speed(config_call: Callable[[], object], baseline_call: Callable[[], object], budget_s: float,
                 config_estimate_s: float, baseline_estimate_s: float | None = None) -> PairedSpeed:
    """Alternate ``baseline_call`` and ``config_call`` (both already prepared and warm) in blocks.

    ``budget_s``: the wall time the pairing may take (at least :data:`MIN_BLOCKS` blocks run
    anyway); ``config_estimate_s`` (the configuration's median from pytest-benchmark) and
    ``baseline_estimate_s`` (the baseline's, when known; else one call measures it) size the blocks.
    Each side makes enough calls to last :data:`MIN_BLOCK_SIDE_S`, sized on its own, so a slow side
    is not repeated to match a fast one. Each block starts with the baseline, so the first block, too,
    follows a switch of runtime.
    """
    start = time.perf_counter()
    if baseline_estimate_s is None:
        baseline_estimate_s = _time(baseline_call, 1)
        config_call()  # so that the first block's baseline, like every other, follows the configuration
    config_calls, baseline_calls = calls_for(config_estimate_s), calls_for(baseline_estimate_s)
    block_s = config_calls * config_estimate_s + baseline_calls * baseline_estimate_s
    blocks = int(min(MAX_BLOCKS, max(MIN_BLOCKS, budget_s // max(block_s, 1e-9))))
    ratios = []
    for _ in range(blocks):
        baseline_s = _time(baseline_call, baseline_calls)
        ratios.append(baseline_s / _time(config_call, config_calls))
    median, low, high = bootstrap_median_ci(ratios)
    return PairedSpeed(median, low, high, blocks, config_calls, time.perf_counter() - start, tuple(ratios),
                       baseline_calls)


class InterleavedBaseline:
    """pytest-benchmark ``setup`` that runs (and times) the baseline before each round of a slow
    configuration: ``benchmark.pedantic(config, setup=interleaved, rounds=n)`` gives blocks
    (baseline, config) in strict alternation, and :meth:`result` pairs them with the rounds'
    times. Only the baseline's calls are added time. Without ``baseline_estimate_s`` the first
    block sizes itself: it calls the baseline until :data:`MIN_BLOCK_SIDE_S` has passed, and every
    later block makes as many calls."""

    def __init__(self, baseline_call: Callable[[], object], baseline_estimate_s: float | None = None):
        self.call = baseline_call
        self.calls = None if baseline_estimate_s is None else calls_for(baseline_estimate_s)
        self.times: list[float] = []  # per call, each block
        self.seconds = 0.0

    def __call__(self) -> None:  # returns None: pytest-benchmark keeps the round's own arguments
        start = time.perf_counter()
        if self.calls is None:
            calls = 0
            while not calls or time.perf_counter() - start < MIN_BLOCK_SIDE_S:
                self.call()
                calls += 1
            self.calls = calls
            elapsed = time.perf_counter() - start
        else:
            elapsed = _time(self.call, self.calls) * self.calls
        self.times.append(elapsed / self.calls)
        self.seconds += elapsed

    def result(self, config_round_s: list[float]) -> PairedSpeed:
        if len(config_round_s) != len(self.times):
            raise CompressbenchError(f"{len(config_round_s)} timed rounds but {len(self.times)} baseline blocks: "
                                     "the pairing needs one baseline block before each round")
        ratios = [b / c for b, c in zip(self.times, config_round_s, strict=True)]
        median, low, high = bootstrap_median_ci(ratios)
        return PairedSpeed(median, low, high, len(ratios), 1, self.seconds, tuple(ratios), self.calls or 1,
                           mode="rounds")


# The phases of :class:`TimeAccount`, in the order a test goes through them, with their words.
PHASES = {
    "build": "building (or reading the cache)",
    "pull": "pulling from the remote cache",
    "push": "pushing to the remote cache",
    "measure": "isolated measurements",
    "load": "loading",
    "inputs": "inputs",
    "warmup": "warm-up calls",
    "timed": "timed rounds",
    "paired": "paired fp32 blocks",
    "retime": "re-timing flagged configurations",
}


class TimeAccount:
    """Wall time by phase (:data:`PHASES`), each second counted once: a phase entered inside another
    (a parent model built while measuring a configuration) is taken out of the outer one."""

    def __init__(self):
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._inner: list[float] = []  # per open phase: seconds spent in phases opened inside it

    @contextlib.contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; valid: {', '.join(PHASES)}")
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.add(name, elapsed - self._inner.pop())
            if self._inner:
                self._inner[-1] += elapsed

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` (measured elsewhere: pytest-benchmark's rounds) under ``name``."""
        self.seconds[name] += seconds

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)

    def since(self, snapshot: Mapping[str, float]) -> dict[str, float]:
        """Seconds per phase since ``snapshot`` (one test's share), rounded, zeros left out."""
        return {k: round(v - snapshot.get(k, 0.0), 3) for k, v in self.seconds.items()
                if round(v - snapshot.get(k, 0.0), 3) > 0}


def time_breakdown(shares: Iterable[Mapping[str, float]], wall_s: float, workers: int = 1) -> dict:
    """A run's wall time by phase: ``shares`` summed (a session's whole :class:`TimeAccount`, or each
    test's share from :meth:`TimeAccount.since`), the rest ``other`` (collection, the kernel probe,
    reporting); ``paired_over_rest``: what the paired fp32 blocks added, as a fraction of the rest
    of the run. Under pytest-xdist (``workers`` > 1) the phases are summed over the workers and are
    not parts of the wall time: no ``other`` then."""
    phases = dict.fromkeys(PHASES, 0.0)
    for share in shares:
        for name, seconds in share.items():
            if name in phases:
                phases[name] += seconds
    counted = sum(phases.values())
    result = {"wall_s": round(wall_s, 1), "workers": workers, "phases_s": {k: round(v, 1) for k, v in phases.items()}}
    if workers <= 1:
        result["other_s"] = round(max(0.0, wall_s - counted), 1)
        rest = wall_s - phases["paired"]
        result["paired_over_rest"] = round(phases["paired"] / rest, 3) if rest > 0 else None
    return result


def format_breakdown(breakdown: Mapping) -> str:
    """One line, e.g. ``time: 1,158 s in all: ..., timed rounds 507 s, paired fp32 blocks 453 s (+64% over
    the rest of the run), other 84 s (...)``; phases under half a second left out."""
    parts = []
    for name, seconds in breakdown["phases_s"].items():
        if seconds < 0.5 and not (name in ("timed", "paired") and "other_s" in breakdown):  # xdist: never timed
            continue
        part = f"{PHASES[name]} {seconds:,.0f} s"
        if name == "paired" and seconds > 0 and breakdown.get("paired_over_rest") is not None:
            part += f" (+{breakdown['paired_over_rest']:.0%} over the rest of the run)"
        parts.append(part)
    if "other_s" in breakdown:
        parts.append(f"other {breakdown['other_s']:,.0f} s (collection, kernel probe, reporting)")
        return f"time: {breakdown['wall_s']:,.0f} s in all: " + ", ".join(parts)
    return (f"time: {breakdown['wall_s']:,.0f} s in all, {breakdown['workers']} workers; summed over them: "
            + ", ".join(parts))


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
        self._faults0 = _minor_faults()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall0
        faults = _minor_faults()
        times = self._process.cpu_times()
        process_cpu = times.user + times.system - self._proc0
        others = max(0.0, self._busy() - self._busy0 - process_cpu)
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cores = os.cpu_count() or 1
        other_cores = others / wall if wall > 0 else 0.0
        reasons = []
        if other_cores > CONTENDED_OTHER_CORES and wall >= MIN_JUDGED_WALL_S:
            reasons.append(f"other processes used {other_cores:.2f} of {cores} cores")
        if load1 is not None and load1 > self.threads + 1:
            reasons.append(f"1-minute load {load1:.2f} > {self.threads} threads + 1")
        self.result = {
            "wall_s": round(wall, 3), "process_cpu_s": round(process_cpu, 3),
            "other_processes_cores": round(other_cores, 3), "cores": cores, "threads": self.threads,
            "loadavg_1m": [None if self._load0 is None else round(self._load0, 2),
                           None if load1 is None else round(load1, 2)],
            "contended": bool(reasons), "reason": "; ".join(reasons) or None,
            # zero-filled pages this process touched (allocator churn: see compressors/machine/allocator.py)
            "minor_faults": None if faults is None or self._faults0 is None else faults - self._faults0,
        }


def _minor_faults() -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
