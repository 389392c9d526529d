"""Device tiers and what this machine has.

Tiers are what the pytest markers mean:

* ``cpu``: always present.
* ``t4``: an NVIDIA GPU of compute capability 7.5 or newer (T4 and later, A100, H100).
* ``legacy_gpu``: an NVIDIA GPU older than 7.5 (e.g. GTX 1050 Ti, 6.1).

:func:`detect` inspects the machine: the CPU (name, physical cores, threads, the ISA
features that change results: AVX2, AVX-512, VNNI, AVX512-BF16, AMX, from py-cpuinfo;
core counts from psutil) and every CUDA device torch sees
(name, compute capability, memory), with the driver version from NVML
(``nvidia-ml-py``) where it is installed. :func:`probe_hardware` does the same with the
CUDA and NVML modules passed in, which is how the unit tests simulate each tier.

:func:`parse_device` validates a ``--device`` value (``cpu``, ``cuda``, ``cuda:N``)
against what was found, and :meth:`HardwareInfo.device_for` maps a tier to the concrete
device a configuration of that tier runs on, or says why it cannot run here.

``python -m compressors.machine.hardware [--require TIER]`` prints what was found as JSON and
exits 1 when a required tier is absent (the nightly GPU job checks its runner with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import sys
from typing import Any

from compressors import CompressbenchError

TIERS = ("cpu", "t4", "legacy_gpu")
TIER_DEVICE = {"cpu": "cpu", "t4": "cuda", "legacy_gpu": "cuda"}
T4_CAPABILITY = (7, 5)

# /proc/cpuinfo flags recorded verbatim (the kernel's names).
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# The features that change results, each as the flags that provide it: VNNI speeds up int8
# dot products (AVX512-VNNI or the AVX-VNNI of newer client CPUs), AVX512-BF16 and AMX give
# native bfloat16 / int8 matmuls (bitsandbytes' CPU 4-bit kernel and PyTorch's bf16 need them).
ISA_FEATURES = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_tile", "amx_bf16", "amx_int8"),
}


# Why some CPUs need a different int8 scheme. x86 CPUs with AVX2/AVX-512 but neither VNNI nor
# AMX compute uint8 x int8 dot products with vpmaddubsw, which adds pairs of products into an
# int16 and saturates there (255 * 127 * 2 > 32767). ONNX Runtime's u8s8 kernels (MatMulInteger,
# QLinearMatMul, DynamicQuantizeMatMul) take that path on such CPUs; its documentation's remedy is
# ``reduce_range`` (7-bit weights: 255 * 63 * 2 < 32767). VNNI (vpdpbusd) and AMX accumulate in
# int32 and never saturate. Figures: docs/decisions/int8-scheme-by-cpu.md.
INT8_SATURATION_RULE = (
    "x86 with AVX2/AVX-512 but no VNNI/AMX: u8s8 dot products go through vpmaddubsw (int16, saturating)"
)


class DeviceError(CompressbenchError, ValueError):
    """A ``--device`` value that is malformed or names a device this machine lacks."""


def tier_for_capability(capability: tuple[int, int]) -> str:
    """The GPU tier of an NVIDIA compute capability: ``t4`` from 7.5 on, ``legacy_gpu`` below."""
    return "t4" if tuple(capability) >= T4_CAPABILITY else "legacy_gpu"


TIER_LOOKED_FOR = {
    "t4": "no NVIDIA GPU with compute capability >= 7.5 found",
    "legacy_gpu": "no NVIDIA GPU with compute capability < 7.5 found",
}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The CPU: name, core counts and the ISA flags of :data:`INTERESTING_FLAGS` it has.

    ``threads`` is the logical CPU count of the machine, ``usable_threads`` how many this
    process may run on (its affinity mask: a container or ``taskset`` limit).
    """

    name: str
    physical_cores: int | None
    threads: int
    usable_threads: int
    flags: tuple[str, ...]

    @property
    def isa(self) -> dict[str, bool]:
        return {feature: any(f in self.flags for f in flags) for feature, flags in ISA_FEATURES.items()}

    @property
    def int8_dot_saturates(self) -> bool:
        """Whether uint8 x int8 dot products can saturate here (see :data:`INT8_SATURATION_RULE`)."""
        isa = self.isa
        return (isa["avx2"] or isa["avx512"]) and not (isa["vnni"] or isa["amx"])

    def int8_flags(self) -> dict:
        """The CPU facts an int8 scheme was chosen from (recorded beside the choice)."""
        isa = self.isa
        return {
            "cpu": self.name,
            **{k: isa[k] for k in ("avx2", "avx512", "vnni", "amx")},
            "int8_dot_saturates": self.int8_dot_saturates,
        }

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "flags": list(self.flags), "isa": self.isa}


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    capability: tuple[int, int]
    total_memory_bytes: int

    @property
    def tier(self) -> str:
        return tier_for_capability(self.capability)

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def describe(self) -> str:
        return f"{self.device} {self.name} (compute capability {self.capability[0]}.{self.capability[1]}, {self.tier})"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "capability": list(self.capability), "tier": self.tier}


@dataclasses.dataclass(frozen=True)
class CudaStatus:
    """What torch and the driver say about CUDA, kept so a missing GPU tier can say why.

    Args:
        torch_cuda: the CUDA version torch was built with (``torch.version.cuda``), None for a CPU build.
        available: ``torch.cuda.is_available()``.
        driver_version: the NVIDIA driver version from NVML, None where NVML is absent or fails.
        note: why the driver version is missing, or other facts worth a skip reason.
    """

    torch_cuda: str | None
    available: bool
    driver_version: str | None = None
    note: str | None = None

    def explain(self) -> str:
        """Why no (other) GPU was found, for skip reasons."""
        parts = [f"torch.cuda.is_available()={self.available}"]
        if self.torch_cuda is None:
            parts.append("torch built without CUDA")
        else:
            parts.append(f"torch built with CUDA {self.torch_cuda}")
            if not self.available:
                parts.append(
                    f"no driver or no visible device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
                )
        if self.driver_version:
            parts.append(f"driver {self.driver_version}")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """A validated ``--device``: ``cpu``, ``cuda`` (every GPU tier) or ``cuda:N`` (that GPU only)."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


@dataclasses.dataclass(frozen=True)
class HardwareInfo:
    """What was found: the CPU, the CUDA devices, and the tiers they make present."""

    cpu: CpuInfo
    gpus: tuple[GpuInfo, ...]
    cuda: CudaStatus

    # Kept for callers that predate CpuInfo (artifact meta of bf16 records the flags).
    @property
    def cpu_flags(self) -> tuple[str, ...]:
        return self.cpu.flags

    @property
    def tiers(self) -> tuple[str, ...]:
        present = {"cpu"} | {g.tier for g in self.gpus}
        return tuple(t for t in TIERS if t in present)

    def gpus_of(self, tier: str) -> tuple[GpuInfo, ...]:
        return tuple(g for g in self.gpus if g.tier == tier)

    def missing_reason(self, tier: str) -> str | None:
        """None when ``tier`` is present; else what was looked for and what was found instead."""
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
        if tier in self.tiers:
            return None
        found = "; ".join(g.describe() for g in self.gpus) if self.gpus else "no CUDA device"
        return f"{tier}: {TIER_LOOKED_FOR[tier]} ({found}; {self.cuda.explain()})"

    def device_for(self, tier: str, choice: DeviceChoice | None = None) -> tuple[str | None, str | None]:
        """``(device, None)``: where a configuration of ``tier`` runs (``cpu`` or ``cuda:N``,
        the first GPU of that tier unless ``choice`` names one); ``(None, reason)`` when it
        cannot run here or ``--device`` excludes it."""
        missing = self.missing_reason(tier)
        if missing:
            return None, missing
        if tier == "cpu":
            if choice is not None and choice.kind != "cpu":
                return None, f"cpu: --device {choice} restricts the run to CUDA"
            return "cpu", None
        if choice is not None and choice.kind == "cpu":
            return None, f"{tier}: --device cpu restricts the run to the CPU"
        gpus = self.gpus_of(tier)
        if choice is not None and choice.index is not None:
            chosen = next(g for g in self.gpus if g.index == choice.index)  # parse_device checked it exists
            if chosen.tier != tier:
                return None, f"{tier}: --device {choice} selects {chosen.describe()}"
            return chosen.device, None
        return gpus[0].device, None

    def to_dict(self) -> dict:
        return {
            "cpu": self.cpu.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
            "cuda": dataclasses.asdict(self.cuda),
            "tiers": list(self.tiers),
        }


def valid_devices(hardware: HardwareInfo) -> list[str]:
    """The ``--device`` values this machine accepts."""
    return ["cpu"] + (["cuda"] + [g.device for g in hardware.gpus] if hardware.gpus else [])


DEVICE_SYNTAX = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(value: str, hardware: HardwareInfo) -> DeviceChoice:
    """Validate a ``--device`` value against ``hardware``.

    Raises :class:`DeviceError` naming the value and the valid choices: malformed values
    (``gpu``, ``cuda:x``, ``cpu:0``), and CUDA devices this machine does not have.
    """
    text = value.strip().lower() if isinstance(value, str) else value
    match = DEVICE_SYNTAX.match(text) if isinstance(text, str) else None
    choices = ", ".join(valid_devices(hardware))
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise DeviceError(f"--device {value!r} is not a device; valid: cpu, cuda, cuda:N (on this machine: {choices})")
    kind, index = match.group(1), None if match.group(2) is None else int(match.group(2))
    if kind == "cuda":
        if not hardware.gpus:
            raise DeviceError(
                f"--device {value!r}: no CUDA device found ({hardware.cuda.explain()}); "
                f"valid on this machine: {choices}"
            )
        if index is not None and index not in {g.index for g in hardware.gpus}:
            found = "; ".join(g.describe() for g in hardware.gpus)
            raise DeviceError(
                f"--device {value!r}: no CUDA device {index} (found {found}); valid on this machine: {choices}"
            )
    return DeviceChoice(kind, index)


# ---------------------------------------------------------------------------------- probing


@functools.cache
def this_cpu() -> CpuInfo:
    """This machine's CPU, read once per process (no torch import)."""
    return read_cpu_info()


def read_cpu_info(info: dict | None = None) -> CpuInfo:
    """The CPU from py-cpuinfo (``cpuinfo.get_cpu_info()``: its name and ISA flags, from
    ``/proc/cpuinfo``, sysctl or CPUID depending on the OS), psutil's core count and the affinity
    mask. ``info`` stands in for py-cpuinfo's answer (a dict with ``brand_raw`` and ``flags``)."""
    import psutil

    if info is None:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    # py-cpuinfo lists the kernel's names (avx512_vnni) and, from CPUID, names without underscores.
    present = {str(f).replace("_", "").lower() for f in info.get("flags") or ()}
    name = info.get("brand_raw") or platform.processor() or platform.machine()
    threads = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    return CpuInfo(
        name=name,
        physical_cores=psutil.cpu_count(logical=False),
        threads=threads,
        usable_threads=usable,
        flags=tuple(f for f in INTERESTING_FLAGS if f.replace("_", "") in present),
    )


def nvml_driver_version(nvml: Any) -> tuple[str | None, str | None]:
    """``(driver version, note)`` from NVML; the note says why the version is missing."""
    if nvml is None:
        return None, "nvidia-ml-py not installed (no driver version, no per-process VRAM)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001  (NVMLError_LibraryNotFound, DriverNotLoaded, ...: reported, not fatal)
        return None, f"NVML unavailable: {exc}"
    try:
        version = nvml.nvmlSystemGetDriverVersion()
        return (version.decode() if isinstance(version, bytes) else str(version)), None
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML driver version unavailable: {exc}"
    finally:
        nvml.nvmlShutdown()


def import_nvml():
    """The ``pynvml`` module of ``nvidia-ml-py``, or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def probe_hardware(
    cuda: Any, torch_cuda_version: str | None, nvml: Any = None, cpu: CpuInfo | None = None
) -> HardwareInfo:
    """Build a :class:`HardwareInfo` from a ``torch.cuda``-like module (``is_available``,
    ``device_count``, ``get_device_properties``, ``get_device_capability``) and a
    ``pynvml``-like module (or None). :func:`detect` passes the real ones."""
    available = bool(cuda.is_available()) if cuda is not None else False
    gpus = []
    if available:
        for index in range(cuda.device_count()):
            props = cuda.get_device_properties(index)
            major, minor = cuda.get_device_capability(index)
            gpus.append(GpuInfo(index, props.name, (int(major), int(minor)), int(props.total_memory)))
    driver, note = nvml_driver_version(nvml) if gpus else (None, None)
    return HardwareInfo(cpu or this_cpu(), tuple(gpus), CudaStatus(torch_cuda_version, available, driver, note))


@functools.cache
def detect() -> HardwareInfo:
    """Inspect this machine once per process (imports torch to ask CUDA)."""
    try:
        import torch
    except ImportError:
        return probe_hardware(None, None)
    return probe_hardware(torch.cuda, torch.version.cuda, import_nvml())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m compressors.machine.hardware",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--require", choices=TIERS, action="append", default=[], help="exit 1 unless this tier is present (repeatable)"
    )
    parser.add_argument("--kernels", action="store_true",
                        help="also print the kernel probe (achieved throughput of each kernel; measured once per "
                             "machine fingerprint and cached, seconds)")
    parser.add_argument("--refresh", action="store_true", help="with --kernels: measure again, ignoring the cache")
    args = parser.parse_args(argv)
    hardware = detect()
    report = hardware.to_dict()
    if args.kernels:
        import torch

        from compressors.core.cache import ArtifactCache
        from compressors.machine.kernels import cached_probe

        report["kernel_probe"] = cached_probe(ArtifactCache().root, hardware.cpu, torch.get_num_threads(),
                                              refresh=args.refresh)
    print(json.dumps(report, indent=2))
    missing = [reason for tier in args.require if (reason := hardware.missing_reason(tier))]
    for reason in missing:
        print(f"required tier missing: {reason}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
