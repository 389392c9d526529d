"""CPU kinds the suite has met, as py-cpuinfo describes them, for tests that simulate another machine.

Flags are the kernel's names, cut to the ones :data:`compressors.machine.hardware.INTERESTING_FLAGS` reads
plus a few others, so the reader has something to skip.
"""

from compressors.machine.hardware import CpuInfo, read_cpu_info


def _info(name: str, flags: str) -> dict:
    return {"brand_raw": name, "flags": ["fpu", "sse2", "ssse3", *flags.split()]}


# Intel Xeon Skylake-SP: AVX-512F/BW, no VNNI, no AVX512-BF16 (int8 dot products saturate).
SKYLAKE_SP = _info("Intel(R) Xeon(R) Platinum 8168 CPU @ 2.70GHz", "avx avx2 avx512f avx512bw avx512vl")
# AMD EPYC Zen 4: AVX-512 with VNNI and BF16.
ZEN4 = _info("AMD EPYC 9654", "avx avx2 avx512f avx512bw avx512_vnni avx512_bf16")
# Intel Sapphire Rapids: AMX besides VNNI.
SAPPHIRE_RAPIDS = _info("Intel(R) Xeon(R) Platinum 8480C",
                        "avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8")
# Intel Haswell: AVX2 only (what `qemu-x86_64 -cpu Haswell` presents).
HASWELL = _info("Intel(R) Core(TM) i7-4770", "avx avx2")
# Intel Alder Lake client: AVX-VNNI without AVX-512.
ALDER_LAKE = _info("12th Gen Intel(R) Core(TM) i7-12700", "avx avx2 avx_vnni")
# An ARM server (no x86 flags at all).
GRAVITON3 = {"brand_raw": "Neoverse-V1", "flags": ["fp", "asimd", "asimddp", "sve", "bf16", "i8mm"]}


def cpu(kind: dict) -> CpuInfo:
    return read_cpu_info(kind)
