"""This process's resident memory (Linux ``/proc/self``): peak RSS, and restarting its high-water mark.

Used by the isolated measurement process (:mod:`compressors.evaluation.probe`) and the training loop
(peak RSS while training), so neither imports the other.
"""

from __future__ import annotations

import resource


def peak_rss_bytes() -> int:
    """The process's peak RSS since it started (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def status_bytes(field: str) -> int | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None where absent."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return status_bytes("VmHWM") is not None
