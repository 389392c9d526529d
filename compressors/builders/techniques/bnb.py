"""bitsandbytes quantization through ``transformers``' ``BitsAndBytesConfig``.

``bnb-int8``: LLM.int8() (``load_in_8bit``, outlier threshold 6.0: activation columns
above it run in 16-bit, the rest in int8). ``bnb-fp4`` / ``bnb-nf4``: 4-bit weights
(FP4 or NormalFloat4, blocks of 64) dequantized in the matmul; ``bnb-nf4-dq`` also
quantizes the block scales (double quantization). Compute dtype float32.

Every ``nn.Linear`` of the encoder (of a causal LM: the decoder, GPT-2's ``Conv1D``
projections included) is quantized; the task head (a causal LM's ``lm_head``, tied to
the input embeddings in SmolLM2 and GPT-2) is not
(``llm_int8_skip_modules``): a 4-bit classifier with 2 outputs trips bitsandbytes'
``N must be divisible by block_n`` assertion, the failure a seed reported as "QLoRA on
DistilBERT is not reliable" (DistilBERT's head is ``pre_classifier`` + ``classifier``).
bitsandbytes' CPU 4-bit kernels also need in_features % 64 == 0 and out_features % 32 == 0;
a linear that does not fit is kept float and listed in ``artifact_meta``.

The artifact is ``save_pretrained`` of the quantized model: packed int8 / 4-bit weights
and their scales, and the quantization config in ``config.json``, reloaded without ever
materialising float weights. It is saved right after quantizing, before any forward
pass: on CPUs with AVX512-BF16 the first 4-bit forward repacks the weights in place for
bitsandbytes' native kernel, and saving after that writes a corrupt checkpoint.
``placement`` records the bitsandbytes backend that ran (CPU native library or not,
AVX512-BF16 4-bit kernel, or CUDA).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_FINAL, TORCH_MODEL, register_variants
from compressors.core.cache import Artifact
from compressors.core.config import Config, ConfigError, check_choice, check_range
from compressors.core.scratch import scratch_dir
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files, hf_auto_class
from compressors.execution.loaders.bnb import quiet_bitsandbytes
from compressors.execution.nn import head_module_names, keep_float_names, linear_names
from compressors.execution.runtime import load_torch_module

BNB_LIBS = ("torch", "transformers", "bitsandbytes", "accelerate")
CPU_4BIT_IN_MULTIPLE, CPU_4BIT_OUT_MULTIPLE = 64, 32


@dataclasses.dataclass(frozen=True)
class BnbConfig(Config):
    """One bitsandbytes quantization.

    Args:
        bits: 8 (LLM.int8) or 4.
        quant_type: 4-bit data type, ``nf4`` or ``fp4`` (ignored for 8 bits).
        double_quant: quantize the 4-bit block scales too.
        int8_threshold: LLM.int8 outlier threshold (activation magnitude kept in 16-bit).
        compute_dtype: dtype the 4-bit matmuls compute in.
        keep_float: ``fnmatch`` patterns of module names whose linears stay float besides the
            head (passed to ``llm_int8_skip_modules``; see :func:`compressors.execution.nn.keep_float_names`).
    """

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = False
    int8_threshold: float = 6.0
    compute_dtype: str = "float32"
    keep_float: tuple[str, ...] = ()

    def validate(self) -> None:
        name = type(self).__name__
        if isinstance(self.keep_float, str) or not all(isinstance(p, str) and p for p in self.keep_float):
            raise ConfigError(f"{name}.keep_float={self.keep_float!r} must be a tuple of module-name patterns")
        check_choice(name, "bits", self.bits, {4, 8})
        check_choice(name, "quant_type", self.quant_type, {"nf4", "fp4"})
        check_choice(name, "compute_dtype", self.compute_dtype, {"float32", "bfloat16", "float16"})
        check_range(name, "int8_threshold", self.int8_threshold, 0.0)


def bnb_quantization_config(config: BnbConfig, skip: list[str]):
    import torch
    from transformers import BitsAndBytesConfig

    if config.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.int8_threshold,
                                  llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype), llm_int8_skip_modules=skip)


def modules_kept_float(model, config: BnbConfig) -> tuple[list[str], list[str]]:
    """``(kept, misfits)``: linears that stay float: the task head and those ``keep_float``
    names, and (4-bit) those whose shape bitsandbytes' CPU kernels cannot take."""
    head = sorted(head_module_names(model) | keep_float_names(model, config.keep_float))
    misfits = []
    if config.bits == 4:
        for name in linear_names(model):
            if name not in head:
                out_features, in_features = model.get_submodule(name).weight.shape
                if in_features % CPU_4BIT_IN_MULTIPLE or out_features % CPU_4BIT_OUT_MULTIPLE:
                    misfits.append(name)
    return head, misfits


@contextlib.contextmanager
def hf_checkpoint(parent: Artifact):
    """A folder ``from_pretrained`` can read for ``parent`` (its own, or a temporary save of its module)."""
    if parent.kind == "hf-torch":
        yield parent.path
        return
    with scratch_dir("ckpt") as scratch:
        load_torch_module(parent).save_pretrained(scratch, safe_serialization=True)
        copy_side_files(parent.path, Path(scratch))
        yield Path(scratch)


def _build_bnb(parent: Artifact, out: Path, config: BnbConfig, ctx: BuildContext) -> dict:
    import collections

    quiet_bitsandbytes()
    parent_model = load_torch_module(parent)
    head, misfits = modules_kept_float(parent_model, config)
    kept_by_config = sorted(keep_float_names(parent_model, config.keep_float))
    del parent_model
    with hf_checkpoint(parent) as folder:
        model = hf_auto_class(folder).from_pretrained(
            folder, quantization_config=bnb_quantization_config(config, head + misfits), device_map="cpu")
        copy_side_files(folder, out)  # first: save_pretrained then writes the config with the quantization config
        model.save_pretrained(out, safe_serialization=True)  # before any forward pass (see the module docstring)
    kinds = collections.Counter(type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Linear"))
    return {
        "bits": config.bits,
        "float_linear_modules": head + misfits,
        "kept_float_by_config": kept_by_config,
        "kept_float_for_cpu_kernel_shape": misfits,
        "linear_modules_by_type": dict(kinds),
    }


_BNB = dict(
    consumes=TORCH_MODEL,
    produces=TORCH_FINAL,
    tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
    devices=frozenset({"cpu", "cuda"}),
    kernels=("bnb-4bit",),  # bnb-int8 overrides it
    build=_build_bnb,
    artifact_kind="torch-bnb",
    weights=("model.safetensors",),
    requires=("bitsandbytes", "accelerate"),
    version_packages=BNB_LIBS,
)
_VIA = " via transformers BitsAndBytesConfig; head float"
register_variants(
    _BNB,
    [
        dict(
            name="bnb-int8",
            kernels=("bnb-int8",),
            config=BnbConfig(bits=8),
            tolerance=0.07,
            summary="bitsandbytes LLM.int8 (threshold 6.0)" + _VIA,
        ),
        dict(
            name="bnb-fp4",
            config=BnbConfig(bits=4, quant_type="fp4"),
            tolerance=0.8,
            summary="bitsandbytes 4-bit FP4" + _VIA,
        ),
        dict(
            name="bnb-nf4",
            config=BnbConfig(bits=4, quant_type="nf4"),
            tolerance=0.6,
            summary="bitsandbytes 4-bit NF4" + _VIA,
        ),
        dict(
            name="bnb-nf4-dq",
            config=BnbConfig(bits=4, quant_type="nf4", double_quant=True),
            tolerance=0.6,
            summary="bitsandbytes 4-bit NF4 + double quantization" + _VIA,
            default_for=frozenset({TASK_CLASSIFICATION}),
        ),
    ],
)
