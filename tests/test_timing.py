"""compressors/timing.py: paired speed ratios and the contention monitor, on synthetic work."""

import subprocess
import sys
import time

from compressors.timing import MIN_BLOCKS, ContentionMonitor, paired_speed


def _sleep(seconds):
    return lambda: time.sleep(seconds)


def test_paired_speed_measures_the_ratio_with_an_interval():
    result = paired_speed(_sleep(0.004), _sleep(0.010), budget_s=0.5, config_estimate_s=0.004)
    assert 2.0 < result.speed < 3.0 and result.low <= result.speed <= result.high
    assert MIN_BLOCKS <= result.blocks and result.seconds < 2.0
    assert result.to_dict()["ci95"] == [round(result.low, 4), round(result.high, 4)]


def test_paired_speed_runs_its_minimum_blocks_even_on_a_tiny_budget():
    result = paired_speed(_sleep(0.001), _sleep(0.001), budget_s=0.0, config_estimate_s=0.001)
    assert result.blocks == MIN_BLOCKS and 0.5 < result.speed < 2.0


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_competing_processes_mark_the_timing_contended():
    import os

    hog = "import time\nend = time.time() + 6\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        with ContentionMonitor(threads=1) as busy:
            _spin(1.0)
    finally:
        for process in hogs:
            process.kill()
            process.wait()
    assert busy.result["contended"] and "other processes used" in busy.result["reason"]
    assert busy.result["other_processes_cores"] > 0.5 and busy.result["process_cpu_s"] > 0
    assert set(busy.result) >= {"wall_s", "loadavg_1m", "cores", "threads", "reason"}
