"""torchao quantization: ``torchao-int8-dyn``, ``torchao-int8-wo`` and their ``-compiled`` variants.

``torchao-int8-dyn``: ``Int8DynamicActivationInt8WeightConfig`` (int8 weights per output
row, activations quantized per row at run time, int8 x int8 matmul through
``torch._int_mm``); ``torchao-int8-wo``: ``Int8WeightOnlyConfig`` (int8 weights per row,
dequantized into a float matmul). Applied to every encoder ``nn.Linear``; the task head
stays float. The weights become torchao tensor subclasses (``Int8Tensor``); the artifact is
their ``state_dict`` (``torch.save``, loadable with ``weights_only=True``), loaded into a
model built from the config with ``assign=True``. ``safetensors`` and pickling the whole
module both fail for these subclasses with torchao 0.18.

``-compiled``: the same model through ``torch.compile`` (default mode, inductor, dynamic
shapes left to dynamo: it specialises the first shape, then marks the sequence axis
dynamic). Compilation happens in ``prepare`` (untimed) on the inputs about to be timed;
its seconds are in ``placement()["torch_compile"]`` and go into ``extra_info``, never
into latency. Eager int8 on CPU is slower than fp32 here; the compiled dynamic variant is
where int8 kernels pay off.
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
from compressors.execution.loaders.torchao import TORCHAO_WEIGHTS
from compressors.execution.nn import layer_keep_float, linear_names, select_linears
from compressors.execution.runtime import load_torch_module

TORCHAO_LIBS = ("torch", "transformers", "torchao")


@dataclasses.dataclass(frozen=True)
class TorchaoConfig(Config):
    """A torchao int8 recipe.

    Args:
        scheme: ``int8-dynamic`` (int8 activations and weights) or ``int8-weight-only``.
        compile: run through ``torch.compile``.
        keep_float: ``fnmatch`` patterns of linears left float besides the head (``*.v_proj``:
            SmolLM2's value projections carry the largest per-token int8 error; see
            docs/decisions/smollm2-massive-activations.md).
        float_layers: indices of transformer layers whose linears all stay float (the float fallback
            ``torchao-int8-dyn-fbN`` chooses them, compressors/builders/techniques/fallback.py).
    """

    scheme: str = "int8-dynamic"
    compile: bool = False
    keep_float: tuple[str, ...] = ()
    float_layers: tuple[int, ...] = keyed_when_set(())

    def validate(self) -> None:
        check_choice(type(self).__name__, "scheme", self.scheme, {"int8-dynamic", "int8-weight-only"})
        if isinstance(self.keep_float, str) or not all(isinstance(p, str) and p for p in self.keep_float):
            raise ConfigError(f"{type(self).__name__}.keep_float={self.keep_float!r} must be a tuple of "
                              "module-name patterns")
        check_float_layers(self)


def torchao_config(scheme: str):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    return Int8DynamicActivationInt8WeightConfig() if scheme == "int8-dynamic" else Int8WeightOnlyConfig()


def apply_torchao(model, scheme: str, keep_float: tuple[str, ...] = ()) -> list[str]:
    """Quantize the base model's linears of ``model`` in place (not the head, nor ``keep_float``);
    returns the names quantized."""
    from torchao.quantization import quantize_

    names = select_linears(model, keep_float=keep_float)
    selected = set(names)
    quantize_(model, torchao_config(scheme), filter_fn=lambda module, fqn: fqn in selected)
    return names


def _build_torchao(parent: Artifact, out: Path, config: TorchaoConfig, ctx: BuildContext) -> dict:
    import torch

    model = load_torch_module(parent)
    names = apply_torchao(model, config.scheme, (*config.keep_float, *layer_keep_float(model, config.float_layers)))
    torch.save(model.state_dict(), out / TORCHAO_WEIGHTS)
    copy_side_files(parent.path, out)
    sample = model.get_submodule(names[0]).weight
    kept = sorted(set(linear_names(model)) - set(names))
    return {"scheme": config.scheme, "compile": config.compile, "quantized_linear_modules": len(names),
            "float_linear_modules": kept, "weight_tensor": type(sample).__name__}


_TORCHAO = dict(consumes=TORCH_MODEL, produces=TORCH_FINAL, tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}),
                devices=frozenset({"cpu", "cuda"}), build=_build_torchao, artifact_kind="torch-torchao",
                weights=(TORCHAO_WEIGHTS,), requires=("torchao",), version_packages=TORCHAO_LIBS, tolerance=0.1)
_DYN_KERNEL = ("int8-int-mm",)
register_variants(_TORCHAO, [
    # per-token int8 activations: the remedy for the massive activations that break per-tensor dynamic-int8
    *[dict(name="torchao-int8-dyn" + ("-compiled" if compiled else ""), kernels=_DYN_KERNEL, compiles=compiled,
           config=TorchaoConfig(scheme="int8-dynamic", compile=compiled),
           summary="torchao int8 dynamic (per-token activations, per-channel weights) of the base model's nn.Linear"
                   + (", torch.compile (inductor)" if compiled else ""))
      for compiled in (False, True)],
    *[dict(name="torchao-int8-wo" + ("-compiled" if compiled else ""), compiles=compiled,
           config=TorchaoConfig(scheme="int8-weight-only", compile=compiled),
           default_for=frozenset({TASK_CLASSIFICATION}),
           summary="torchao int8 weight-only quantization of the base model's nn.Linear"
                   + (", torch.compile (inductor)" if compiled else ""))
      for compiled in (False, True)],
    # causal LMs: the value projections kept float (they carry the largest per-token int8 error on SmolLM2)
    *[dict(name="torchao-int8-dyn-vfloat" + ("-compiled" if compiled else ""), kernels=_DYN_KERNEL, compiles=compiled,
           config=TorchaoConfig(scheme="int8-dynamic", compile=compiled, keep_float=("*.v_proj",)),
           tasks=frozenset({TASK_CAUSAL_LM}),
           summary="torchao int8 dynamic of the decoder's linears, every v_proj float"
                   + (", torch.compile (inductor)" if compiled else ""))
      for compiled in (False, True)],
])
