"""The timing process's allocator: pinned to a steady state unless the user chose otherwise."""

import mmap

import pytest

from compressors.machine.allocator import (
    MALLOC_MODES,
    STEADY_MMAP_THRESHOLD,
    MallocModeError,
    _glibc,
    settle_malloc,
    user_settings,
)
from compressors.machine.timing import ContentionMonitor

GLIBC = _glibc()[0] is not None


def test_an_unknown_mode_names_the_valid_ones():
    with pytest.raises(MallocModeError, match=r"--malloc='fast'.*steady, as-is"):
        settle_malloc("fast", environ={})


@pytest.mark.parametrize("environ", [
    {"MALLOC_MMAP_THRESHOLD_": "65536"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"},
    {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
])
def test_the_users_own_allocator_settings_stand(environ):
    record = settle_malloc("steady", environ=environ)
    assert record["mode"] == "user" and not record["applied"]
    assert set(record["user_settings"]) == set(environ) and "stand" in record["why"]


def test_unrelated_preloads_and_tunables_are_not_taken_for_allocator_settings():
    assert user_settings({"LD_PRELOAD": "/lib/libfoo.so", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}) == {}


def test_as_is_leaves_glibc_alone():
    record = settle_malloc("as-is", environ={})
    assert not record["applied"] and record["mode"] == "as-is"


@pytest.mark.skipif(not GLIBC, reason="needs glibc (mallopt)")
def test_steady_pins_the_thresholds_on_glibc():
    record = settle_malloc("steady", environ={})
    assert record["applied"] and record["mmap_threshold"] == STEADY_MMAP_THRESHOLD
    assert record["glibc"] and set(MALLOC_MODES) == {"steady", "as-is"}


def test_the_contention_record_counts_the_pages_faulted_in():
    size = 16 * 1024 * 1024
    with ContentionMonitor(threads=1) as monitor:
        area = mmap.mmap(-1, size)  # fresh anonymous pages: the first write to each faults it in
        for offset in range(0, size, mmap.PAGESIZE):
            area[offset] = 1
        area.close()
    assert monitor.result["minor_faults"] >= 0.9 * size / mmap.PAGESIZE
