"""The hand-written absmax INT8 weight quantizer (the seeds' "custom" technique), done right.

Symmetric int8: ``scale = max|w| / 127`` (one per tensor, or one per output
channel), ``q = round(w / scale)`` clamped to [-127, 127]. Weights are *stored*
as int8 tensors plus float scales (a real size reduction) and dequantized on the
fly in ``forward``; activations stay float. No library offers this as a plain,
inspectable module, which is why it is hand-written (the other INT8 techniques
use PyTorch's and ONNX Runtime's quantizers).

Techniques:

* ``custom-int8-tensor``: one scale per tensor, every encoder/decoder linear.
* ``custom-int8-channel``: one scale per output channel, every linear.
* ``custom-int8-attn``: per-channel, attention projections only.
* ``custom-int8-ffn``: per-channel, feed-forward linears only.

The task head (every linear outside ``model.base_model_prefix``: a classifier, or a
causal LM's ``lm_head``) stays float, and so do embeddings and norms, which are not
linears. For SmolLM2 and GPT-2 the ``lm_head`` *is* the input embedding matrix (tied
weights): quantizing it would quantize the embeddings too, and its logits feed the
perplexity directly. GPT-2's ``Conv1D`` projections are converted to ``nn.Linear`` first
(:func:`~compressors.execution.nn.conv1d_to_linear`). The dequantized weight
is computed in the activations' dtype (float32 here), so nothing overflows as it would in
float16.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import TORCH_FINAL, TORCH_MODEL, register_variants
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_choice
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files
from compressors.execution.loaders.absmax import ABSMAX_WEIGHTS
from compressors.execution.nn import ROLES, conv1d_to_linear, replace_module, select_linears
from compressors.execution.runtime import load_torch_module


@dataclasses.dataclass(frozen=True)
class AbsmaxInt8Config(Config):
    """Symmetric absmax INT8 weight-only quantization.

    Per-channel is the default granularity; per-tensor is kept as a variant with a wider budget
    (see docs/decisions/absmax-granularity.md).

    Args:
        granularity: ``per-tensor`` (one scale per weight matrix) or ``per-channel``
            (one per output row; an outlier row then cannot crush the others).
        scope: ``all`` linears of the base model, only ``attention`` projections,
            or only ``ffn`` linears.
    """

    granularity: str = "per-channel"
    scope: str = "all"

    def validate(self) -> None:
        check_choice(type(self).__name__, "granularity", self.granularity, {"per-tensor", "per-channel"})
        check_choice(type(self).__name__, "scope", self.scope, set(ROLES))


def absmax_quantize(weight, granularity: str):
    """Return ``(int8 weight, float32 scale)``; scale has shape (out, 1) per channel, () per tensor."""
    import torch

    w = weight.detach().float()
    absmax = w.abs().amax(dim=1, keepdim=True) if granularity == "per-channel" else w.abs().amax()
    scale = (absmax / 127.0).clamp(min=torch.finfo(torch.float32).tiny)  # an all-zero row keeps scale > 0
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def apply_absmax_int8(model, config: AbsmaxInt8Config) -> list[str]:
    """Replace the selected linears of ``model`` in place; returns their names."""
    from compressors.execution.int8_linear import Int8Linear

    conv1d_to_linear(model)
    names = select_linears(model, role=config.scope)
    for name in names:
        linear = model.get_submodule(name)
        q, scale = absmax_quantize(linear.weight, config.granularity)
        replace_module(model, name, Int8Linear(q, scale, linear.bias))
    return names


def _build_absmax(parent: Artifact, out: Path, config: AbsmaxInt8Config, ctx: BuildContext) -> dict:
    import torch

    model = load_torch_module(parent).eval()
    names = apply_absmax_int8(model, config)
    torch.save(model, out / ABSMAX_WEIGHTS)
    copy_side_files(parent.path, out)
    return {"quantized_linear_modules": len(names), "scope": config.scope}


# Its loader (compressors.execution.loaders.absmax) names the pickled Int8Linear's import path: it is in
# the cache key, so moving the class rebuilds these artifacts once.
_ABSMAX = dict(consumes=TORCH_MODEL, produces=TORCH_FINAL, tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
               devices=frozenset({"cpu", "cuda"}), build=_build_absmax, artifact_kind="torch-absmax-int8",
               weights=(ABSMAX_WEIGHTS,))
_STORED = "hand-written absmax INT8 weights (int8 + scales stored, dequantized in forward): "
register_variants(_ABSMAX, [
    dict(name="custom-int8-tensor", config=AbsmaxInt8Config("per-tensor", "all"), tolerance=0.1,
         summary=_STORED + "one scale per tensor, every linear"),
    dict(name="custom-int8-channel", config=AbsmaxInt8Config("per-channel", "all"),
         summary=_STORED + "one scale per output channel, every linear"),
    dict(name="custom-int8-attn", config=AbsmaxInt8Config("per-channel", "attention"),
         summary=_STORED + "per-channel, attention projections only"),
    dict(name="custom-int8-ffn", config=AbsmaxInt8Config("per-channel", "ffn"),
         summary=_STORED + "per-channel, feed-forward linears only"),
])
