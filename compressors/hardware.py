"""Device tiers and what this machine has.

Tiers are what the pytest markers mean:

* ``cpu``: always present.
* ``t4``: an NVIDIA GPU of compute capability 7.5 or newer (T4 and later).
* ``legacy_gpu``: an NVIDIA GPU older than 7.5 (e.g. GTX 1050 Ti, 6.1).
"""

from __future__ import annotations

import dataclasses
import os
import platform

TIERS = ("cpu", "t4", "legacy_gpu")
TIER_DEVICE = {"cpu": "cpu", "t4": "cuda", "legacy_gpu": "cuda"}
T4_CAPABILITY = (7, 5)


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    capability: tuple[int, int]
    total_memory_bytes: int


@dataclasses.dataclass(frozen=True)
class HardwareInfo:
    """What was found: CPU model and flags of interest, GPUs, and the tiers they make present."""

    cpu_model: str
    cpu_count: int
    cpu_flags: tuple[str, ...]
    gpus: tuple[GpuInfo, ...]

    @property
    def tiers(self) -> tuple[str, ...]:
        tiers = ["cpu"]
        if any(g.capability >= T4_CAPABILITY for g in self.gpus):
            tiers.append("t4")
        if any(g.capability < T4_CAPABILITY for g in self.gpus):
            tiers.append("legacy_gpu")
        return tuple(tiers)

    def to_dict(self) -> dict:
        return {
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "cpu_flags": list(self.cpu_flags),
            "gpus": [dataclasses.asdict(g) for g in self.gpus],
            "tiers": list(self.tiers),
        }


INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def _cpu_info() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, tuple(f for f in INTERESTING_FLAGS if f in flags)


def detect() -> HardwareInfo:
    """Inspect this machine (imports torch only to ask CUDA)."""
    model, flags = _cpu_info()
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append(GpuInfo(i, props.name, (props.major, props.minor), props.total_memory))
    except ImportError:
        pass
    return HardwareInfo(model, os.cpu_count() or 1, flags, tuple(gpus))
