"""PyTorch-native quantization.

``dynamic-int8``: PyTorch dynamic quantization (``torch.ao.quantization.quantize_dynamic``):
int8 weights with one scale per output channel, activations quantized on the fly
per batch, for every ``nn.Linear`` of the encoder (of a causal LM: the decoder; GPT-2's
``Conv1D`` projections are converted to ``nn.Linear`` first). The task head (classifier,
or a causal LM's ``lm_head``, tied to the embeddings in SmolLM2 and GPT-2) stays float by
default (see :class:`DynamicInt8Config`); embeddings and norms are never quantized. The artifact is the quantized
module itself (``torch.save`` of the model: packed int8 weights + scales), so
loading it never materialises the float weights: rebuilding the float model and
quantizing it at load time made peak memory higher than fp32's.

``dynamic-int8-attn`` (causal LMs): the same, with every feed-forward (``*.mlp.*``) linear
kept float, so only the attention projections are quantized: PyTorch's dynamic quantization
scales a linear's input with one activation scale per tensor, which cannot cover the massive
activations entering SmolLM2's MLP. Keeping the whole MLP float is the variant that held the 3%
perplexity budget, at the cost of a larger artifact (``artifact_meta.float_linear_modules`` lists
what stayed float); see docs/decisions/smollm2-massive-activations.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_FINAL, TORCH_MODEL, register_variants
from compressors.core.cache import Artifact
from compressors.core.config import Config, ConfigError, check_choice, check_float_layers, keyed_when_set
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files
from compressors.execution.loaders.dynamic_int8 import DYNAMIC_INT8_WEIGHTS
from compressors.execution.nn import conv1d_to_linear, layer_keep_float, linear_names, select_linears
from compressors.execution.runtime import load_torch_module


@dataclasses.dataclass(frozen=True)
class DynamicInt8Config(Config):
    """PyTorch dynamic INT8 quantization of linear layers.

    Args:
        dtype: weight dtype (``qint8``; ``float16`` gives dynamic FP16 linears).
        granularity: int8 weight scales ``per-channel`` (one per output row) or
            ``per-tensor``. Per-channel by default, the more accurate of the two on
            minilm-sst2; see docs/decisions/dynamic-int8-granularity-and-head.md.
        quantize_head: also quantize the task head (every ``nn.Linear`` outside
            the encoder). Off by default: a float head costs a few KB and measured no
            worse (same record).
        keep_float: ``fnmatch`` patterns of module names (``*.mlp.down_proj``) whose
            linears stay float besides the head; see :func:`compressors.execution.nn.keep_float_names`.
        float_layers: indices of transformer layers whose linears all stay float (the float fallback
            ``dynamic-int8-fbN`` chooses them, compressors/builders/techniques/fallback.py).
    """

    dtype: str = "qint8"
    granularity: str = "per-channel"
    quantize_head: bool = False
    keep_float: tuple[str, ...] = ()
    float_layers: tuple[int, ...] = keyed_when_set(())

    def validate(self) -> None:
        check_choice(type(self).__name__, "dtype", self.dtype, {"qint8", "float16"})
        check_choice(type(self).__name__, "granularity", self.granularity, {"per-channel", "per-tensor"})
        if isinstance(self.keep_float, str) or not all(isinstance(p, str) and p for p in self.keep_float):
            raise ConfigError(f"{type(self).__name__}.keep_float={self.keep_float!r} must be a tuple of "
                              "module-name patterns")
        check_float_layers(self)

    def kept_float(self, model) -> tuple[str, ...]:
        """Every ``keep_float`` pattern on ``model``: the configured ones and those of ``float_layers``."""
        return (*self.keep_float, *layer_keep_float(model, self.float_layers))


def apply_dynamic_int8(model, config: DynamicInt8Config):
    """Quantize ``model``'s linears in place per ``config`` (GPT-2's ``Conv1D`` projections
    are turned into ``nn.Linear`` first); returns the model."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float16_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    if config.dtype == "float16":
        qconfig = float16_dynamic_qconfig
    else:
        qconfig = per_channel_dynamic_qconfig if config.granularity == "per-channel" else default_dynamic_qconfig
    conv1d_to_linear(model)
    spec = dict.fromkeys(select_linears(model, keep_head_float=not config.quantize_head,
                                        keep_float=config.kept_float(model)), qconfig)
    dtype = torch.qint8 if config.dtype == "qint8" else torch.float16
    return quantize_dynamic(model.eval(), qconfig_spec=spec, dtype=dtype, inplace=True)


def _build_dynamic_int8(parent: Artifact, out: Path, config: DynamicInt8Config, ctx: BuildContext) -> dict:
    import torch

    model = load_torch_module(parent)
    converted = conv1d_to_linear(model)
    linears = linear_names(model)
    kept_float = sorted(set(linears) - set(select_linears(model, keep_head_float=not config.quantize_head,
                                                           keep_float=config.kept_float(model))))
    apply_dynamic_int8(model, config)
    torch.save(model, out / DYNAMIC_INT8_WEIGHTS)
    copy_side_files(parent.path, out)
    return {
        "quantized_engine": torch.backends.quantized.engine,
        "float_linear_modules": kept_float,
        "quantized_linear_modules": len(linears) - len(kept_float),
        "conv1d_converted_to_linear": len(converted),
    }


_DYNAMIC = dict(consumes=TORCH_MODEL, produces=TORCH_FINAL, devices=frozenset({"cpu"}), build=_build_dynamic_int8,
                artifact_kind="torch-dynamic-int8", weights=(DYNAMIC_INT8_WEIGHTS,), tolerance=0.15,
                kernels=("fbgemm-dynamic-int8",))
register_variants(_DYNAMIC, [
    dict(name="dynamic-int8", config=DynamicInt8Config(), tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
         summary="PyTorch dynamic quantization: int8 per-channel weights, dynamic int8 activations, "
                 "encoder nn.Linear only"),
    dict(name="dynamic-int8-attn", config=DynamicInt8Config(keep_float=("*.mlp.*",)), tasks=frozenset({TASK_CAUSAL_LM}),
         summary="PyTorch dynamic quantization of the attention projections only: every *.mlp.* linear kept float "
                 "(its inputs carry the massive activations that one per-tensor activation scale cannot cover)"),
])
