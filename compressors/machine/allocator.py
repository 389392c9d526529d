"""The C allocator's state, pinned so a configuration's timing does not depend on what ran before it.

glibc's malloc serves a large request (above ``M_MMAP_THRESHOLD``, 128 KiB at start) with a fresh
``mmap`` and gives it back on ``free``; it returns the top of the heap to the system once more than
``M_TRIM_THRESHOLD`` is free there. Both thresholds move at run time: freeing an mmapped block raises
them (up to 32 MiB and 64 MiB on 64-bit Linux). Memory that is mapped or trimmed again is zero-filled
page by page on its next use (a minor page fault per 4 KiB). So within one pytest process the same
configuration page-faults a lot or hardly at all depending on which configurations ran before it:
measured on AMD EPYC (Zen 3, AVX2, 2 cores), two runs of the MiniLM matrix in a row gave
``lowrank-50-ft`` at batch 32 20,792 vs 15,453 faults per call, ``distill-l3+openvino-int8`` 46 vs
18,578, fp32 about 16,800 in both. How much that costs depends on the configuration: ``custom-int8-tensor``
(which dequantizes its weights in every forward) ran at 0.24 x fp32 at batch 1 with glibc held at a
static 128 KiB threshold (``MALLOC_MMAP_THRESHOLD_=131072``) against 0.95 x with a reused heap.

``steady`` (the default) pins the state a long-running inference process converges to: requests up to
glibc's own ceiling (32 MiB) come from the heap, and the heap is not trimmed while the session runs,
so freed blocks are reused instead of faulted in again (what jemalloc and tcmalloc do by design).
``as-is`` leaves glibc's dynamic thresholds alone. A user's own ``MALLOC_*_`` / ``GLIBC_TUNABLES``
settings or a preloaded allocator always stand. Only the benchmark process is pinned: quality and
memory are measured in fresh child processes, whose peak RSS this does not touch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MALLOC_MODES = ("steady", "as-is")

# mallopt(3) parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: its own dynamic ceiling
STEADY_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: about 2 GiB, i.e. never trim during a session

USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


class MallocModeError(ValueError):
    pass


def _glibc():
    """(libc handle, glibc version) or (None, None) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, None
    version.restype = ctypes.c_char_p
    return libc, version().decode()


def user_settings(environ=None) -> dict:
    """The allocator settings the user chose, which always stand: ``MALLOC_*_`` variables, malloc
    tunables in ``GLIBC_TUNABLES``, or an allocator in ``LD_PRELOAD``."""
    environ = os.environ if environ is None else environ
    found = {name: environ[name] for name in USER_ENV if environ.get(name)}
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in tunables:
        found["GLIBC_TUNABLES"] = tunables
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in PRELOADED):
        found["LD_PRELOAD"] = preload
    return found


def settle_malloc(mode: str = "steady", environ=None) -> dict:
    """Apply ``mode`` (:data:`MALLOC_MODES`) to this process's allocator; returns what was done, for the
    saved run's machine info: ``{"mode", "applied", "why", ...}``."""
    if mode not in MALLOC_MODES:
        raise MallocModeError(f"--malloc={mode!r}: choose one of {', '.join(MALLOC_MODES)}")
    user = user_settings(environ)
    libc, version = _glibc()
    record = {"mode": mode, "glibc": version, "applied": False}
    if user:
        return {**record, "mode": "user", "user_settings": user,
                "why": "the user's allocator settings stand: " + ", ".join(sorted(user))}
    if libc is None:
        return {**record, "why": "not glibc: its allocator is left as it is"}
    if mode == "as-is":
        return {**record, "why": "--malloc=as-is: glibc's dynamic mmap and trim thresholds"}
    ok = libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD) == 1 and ok
    if not ok:
        return {**record, "why": "mallopt refused the steady thresholds: glibc's dynamic ones stand"}
    return {**record, "applied": True, "mmap_threshold": STEADY_MMAP_THRESHOLD,
            "trim_threshold": STEADY_TRIM_THRESHOLD,
            "why": "heap blocks up to 32 MiB reused, heap not trimmed during the session"}
