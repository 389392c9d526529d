"""Half precision: ``bf16`` (CPU and CUDA) and ``fp16`` (CUDA only).

The model's weights are cast and saved as safetensors in that dtype (half the
size of fp32); activations run in it too. On CPU, BF16 matmuls are fast only
with native support (AVX512-BF16 or AMX); the artifact records whether the build
machine had it, and ``placement`` shows the dtypes that actually ran. FP16 on
CPU has no fast kernels in PyTorch, so ``fp16`` is registered for CUDA only and
its CPU cases are collected and skipped with that reason.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_FINAL, TORCH_MODEL, register_variants
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_choice
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import save_hf_model
from compressors.execution.runtime import load_torch_module


@dataclasses.dataclass(frozen=True)
class HalfPrecisionConfig(Config):
    """Cast every floating-point weight to ``dtype`` (``bfloat16`` or ``float16``)."""

    dtype: str = "bfloat16"

    def validate(self) -> None:
        check_choice(type(self).__name__, "dtype", self.dtype, {"bfloat16", "float16"})


def _build_half(parent: Artifact, out: Path, config: HalfPrecisionConfig, ctx: BuildContext) -> dict:
    import torch

    from compressors.machine.hardware import detect

    model = load_torch_module(parent).to(getattr(torch, config.dtype))
    save_hf_model(model, parent.path, out)  # its config records the new dtype
    flags = detect().cpu_flags
    return {
        "dtype": config.dtype,
        "cpu_native_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
        "cpu_flags": list(flags),
    }


_HALF = dict(consumes=TORCH_MODEL, produces=TORCH_FINAL, tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
             build=_build_half, artifact_kind="hf-torch", weights=("model.safetensors",))
register_variants(_HALF, [
    dict(name="bf16", config=HalfPrecisionConfig("bfloat16"), devices=frozenset({"cpu", "cuda"}),
         kernels=("bf16-gemm",),
         summary="weights and activations in bfloat16 (PyTorch eager)"),
    # CUDA only: its CPU cases are collected and skipped with that reason; in the classifier matrix
    # (the language-model matrix is CPU-led until a GPU tier runs it).
    dict(name="fp16", config=HalfPrecisionConfig("float16"), devices=frozenset({"cuda"}),
         default_for=frozenset({TASK_CLASSIFICATION}), summary="weights and activations in float16 (PyTorch eager)"),
])
