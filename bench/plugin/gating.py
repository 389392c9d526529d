"""Which collected configurations run here: a test marked for a device tier this machine lacks (or that
``--device`` excludes) is skipped with a reason naming what was looked for, and so is a CPU configuration
whose kernel the probe found to be a reference fallback on this machine (unless ``--run-slow-kernels``)."""

from __future__ import annotations

import pytest

from bench.plugin.options import setting
from bench.plugin.state import run_state
from compressors.machine.hardware import TIERS as TIER_MARKERS


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    tiered = [(item, tier) for item in items for tier in TIER_MARKERS if item.get_closest_marker(tier)]
    if not tiered:  # unit tests: no need to ask CUDA
        return
    from compressors.machine.hardware import detect

    state = run_state(config)
    hardware, choice = detect(), (state.device if state is not None else None)
    for item, tier in tiered:
        device, reason = hardware.device_for(tier, choice)
        if device is None:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif tier == "cpu" and not setting(config, "run_slow_kernels"):
            reason = slow_kernel_skip(config, item)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def case_of(item):
    """The benchmark case (bench.cases.Case) a collected test runs, or None for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((v for v in params.values() if hasattr(v, "chain") and hasattr(v, "scenario")), None)


def slow_kernel_skip(config, item) -> str | None:
    """Why a CPU configuration is skipped here: a kernel it rests on is a reference fallback on this
    machine (compressors.machine.kernels.slow_kernel_reason), or None."""
    case = case_of(item)
    if case is None or not case.chain.kernels:
        return None
    from compressors.machine.kernels import slow_kernel_reason

    probe = kernel_probe(config)
    for kernel in case.chain.kernels:
        reason = slow_kernel_reason(probe, kernel)
        if reason:
            return f"{case.chain.name}: {reason}; --run-slow-kernels to run it anyway"
    return None


def kernel_probe(config) -> dict:
    """This machine's kernel probe (compressors.machine.kernels), measured once per fingerprint and cached
    (on disk, and in the run's state for the session)."""
    state = run_state(config)
    if state is not None and state.kernel_probe is not None:
        return state.kernel_probe
    import torch

    from compressors.core.cache import ArtifactCache
    from compressors.machine.hardware import this_cpu
    from compressors.machine.kernels import cached_probe

    root = ArtifactCache(setting(config, "cache_dir")).root
    probe = cached_probe(root, this_cpu(), torch.get_num_threads())
    if state is not None:
        state.kernel_probe = probe
    return probe
