"""OpenVINO techniques (Intel's CPU inference runtime, with NNCF for compression).

``openvino-fp32``: the PyTorch model converted with ``openvino.convert_model`` and saved as IR
(``openvino_model.xml`` + ``.bin``, float32 weights: ``compress_to_fp16=False``). A classifier gets
dynamic batch and sequence axes; a causal LM is exported *stateful* (its KV cache lives in the infer
request, the layout OpenVINO's CPU plugin fuses into its ScaledDotProductAttention with cache),
written by hand because optimum-intel does not support transformers 5.

``openvino-int8`` (classifiers): ``nncf.quantize`` post-training quantization of that IR, model type
TRANSFORMER, calibrated on 300 sentences of the held-apart SST-2 *train* slice (never dev), one
unpadded sentence per item.

``openvino-int8-wo`` / ``openvino-int4-wo`` (causal LMs): ``nncf.compress_weights``: int8 asymmetric
per-channel weights; int4 symmetric in groups of 64 for 80% of the linears (the rest int8, by NNCF's
sensitivity), with AWQ and scale estimation calibrated on 64 windows of 256 tokens of
``wiki.valid.tokens`` (never the test text). ``openvino-int4-wo-rR-gG`` is that recipe with R% of the
linears in int4 (0 <= R <= 100, NNCF's ``ratio``) in groups of G (32, 64 or 128): ``openvino-int4-wo`` is
``r80-g64``. The family has no default-matrix cases; it is there for searches over the two knobs.

Runtime: OpenVINO's CPU plugin, latency hint (one stream), the same thread count as the other
runtimes, and **float32 inference precision** set explicitly: on CPUs with AVX512-BF16 or AMX the
plugin otherwise runs in bf16 (and keeps an LM's KV cache in u8). What it really ran with is read
back from the compiled model into ``placement`` (the loader and predictors:
``compressors/execution/loaders/openvino.py``). OpenVINO's GPU plugin is not used: these are CPU
techniques. Recipes and figures: docs/decisions/openvino.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import OPENVINO_IR as OPENVINO_IR_FLOW
from compressors.builders.techniques.base import (
    TORCH_MODEL,
    ChainError,
    Technique,
    name_knob,
    register_technique_family,
    register_variants,
)
from compressors.core.cache import Artifact
from compressors.core.config import Config, check_choice, check_float_layers, check_range, keyed_when_set
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files, is_causal_lm_folder
from compressors.execution.loaders.openvino import OPENVINO_IR, OPENVINO_WEIGHTS
from compressors.execution.runtime import load_torch_module

OPENVINO_LIBS = ("torch", "transformers", "openvino", "nncf")
CALIBRATION_SENTENCES = 300
LM_CALIBRATION_WINDOWS, LM_CALIBRATION_TOKENS = 64, 256
INT4_GROUP_SIZES = (32, 64, 128)  # what openvino-int4-wo-rR-gG offers (per-channel, -1, is not)


# ------------------------------------------------------------------------------------------- export

@dataclasses.dataclass(frozen=True)
class OpenVinoExportConfig(Config):
    """``openvino.convert_model`` to an IR with float32 weights (classifiers: dynamic batch and sequence;
    causal LMs: stateful, batch 1, dynamic sequence)."""


def _export_classifier(model, tokenizer):
    import inspect

    import openvino as ov
    import torch

    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in tokenizer.model_input_names if n in accepted]
    sample = tokenizer(["a short sample sentence for export", "another one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        converted = ov.convert_model(model, example_input={n: sample[n] for n in names},
                                     input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names])
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted, names


def _export_causal_lm(model):
    """A stateful IR: past K/V as OpenVINO variables with an initial empty value, and a ``beam_idx``
    Gather on them (both are what the CPU plugin's stateful SDPA fusion looks for)."""
    import openvino as ov
    import openvino.opset13 as ops
    import torch
    from openvino._offline_transformations import apply_make_stateful_transformation
    from transformers import DynamicCache

    config = model.config
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads

    class WithCache(torch.nn.Module):
        """Flat past keys/values in, logits and flat present keys/values out."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, beam_idx, *past):
            cache = DynamicCache(config=self.inner.config)
            for i, layer in enumerate(cache.layers):  # set, not update(): update on an empty layer breaks tracing
                layer.keys = past[2 * i].index_select(0, beam_idx)
                layer.values = past[2 * i + 1].index_select(0, beam_idx)
                layer.device, layer.is_initialized = past[2 * i].device, True
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True)
            return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])

    past_names = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    cached, new = 3, 5  # a trace with both a cache and several new tokens takes the general mask branch
    example = [torch.randint(0, min(100, config.vocab_size), (1, new)), torch.ones(1, cached + new, dtype=torch.int64),
               torch.arange(cached, cached + new)[None], torch.zeros(1, dtype=torch.int32)]
    example += [torch.randn(1, kv_heads, cached, head_dim) for _ in past_names]
    shapes = [[1, -1], [1, -1], [1, -1], [-1]] + [[1, kv_heads, -1, head_dim]] * len(past_names)
    types = [ov.Type.i64] * 3 + [ov.Type.i32] + [ov.Type.f32] * len(past_names)
    with torch.no_grad():
        converted = ov.convert_model(WithCache(model.eval()), example_input=tuple(example),
                                     input=[(ov.PartialShape(s), t) for s, t in zip(shapes, types, strict=True)])
    names = ["input_ids", "attention_mask", "position_ids", "beam_idx", *past_names]
    for port, name in zip(converted.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    for i, port in enumerate(converted.outputs):
        port.get_tensor().set_names({"logits"} if i == 0 else {past_names[i - 1].replace("past", "present")})
    apply_make_stateful_transformation(converted, {n: n.replace("past", "present") for n in past_names})
    batch = ops.gather(ops.shape_of(converted.input("input_ids"), output_type="i64"), ops.constant([0]),
                       ops.constant(0))
    for op in converted.get_ops():
        if op.get_type_name() == "ReadValue":  # the initial (empty) cache, computed from the batch size
            dims = [batch if i == 0 else ops.constant(np.array([d.get_min_length()], np.int64))
                    for i, d in enumerate(op.get_output_partial_shape(0))]
            op.set_arguments([ops.broadcast(ops.constant(0.0, dtype=op.get_output_element_type(0)),
                                            ops.concat(dims, 0))])
    converted.validate_nodes_and_infer_types()
    return converted, ["input_ids", "attention_mask"]


def _build_openvino_fp32(parent: Artifact, out: Path, config: OpenVinoExportConfig, ctx: BuildContext) -> dict:
    import openvino as ov
    from transformers import AutoTokenizer

    model = load_torch_module(parent)
    causal = is_causal_lm_folder(parent.path)
    if causal:
        converted, inputs = _export_causal_lm(model)
    else:
        converted, inputs = _export_classifier(model, AutoTokenizer.from_pretrained(parent.path))
    ov.save_model(converted, str(out / OPENVINO_IR), compress_to_fp16=False)
    copy_side_files(parent.path, out)
    return {"task": TASK_CAUSAL_LM if causal else TASK_CLASSIFICATION, "inputs": inputs, "stateful": causal,
            "weights_dtype": "float32", "openvino": ov.__version__}


# ------------------------------------------------------------------------------------------- NNCF

@dataclasses.dataclass(frozen=True)
class NncfQuantizeConfig(Config):
    """``nncf.quantize`` of a classifier IR.

    Args:
        calibration_sentences: SST-2 train sentences of the held-apart slice (one unpadded sentence per item).
        preset: ``mixed`` (NNCF's default for transformers: symmetric weights, asymmetric activations)
            or ``performance``.
        overflow_fix: NNCF's remedy for CPUs whose uint8 x int8 dot products saturate (7-bit
            weights): ``enable`` (every layer), ``first_layer`` (NNCF's default) or ``disable``;
            ``None`` (default): chosen from the CPU the artifact is built for (:meth:`for_machine`).
        float_layers: indices of transformer layers whose operations NNCF leaves float (its ``ignored_scope``,
            :func:`layer_operations`); the float fallback ``openvino-int8-fbN`` chooses them
            (compressors/builders/techniques/fallback.py).
    """

    calibration_sentences: int = CALIBRATION_SENTENCES
    preset: str = "mixed"
    overflow_fix: str | None = None
    float_layers: tuple[int, ...] = keyed_when_set(())

    def validate(self) -> None:
        check_float_layers(self)
        check_range(type(self).__name__, "calibration_sentences", self.calibration_sentences, 1, 1000)
        check_choice(type(self).__name__, "preset", self.preset, {"mixed", "performance"})
        if self.overflow_fix is not None:
            check_choice(type(self).__name__, "overflow_fix", self.overflow_fix, set(OVERFLOW_FIX))

    def for_machine(self, cpu) -> NncfQuantizeConfig:
        """``overflow_fix`` None: chosen from the CPU, as ONNX Runtime's ``reduce_range`` is
        (docs/decisions/int8-scheme-by-cpu.md): 7-bit weights in every layer ("enable") where
        uint8 x int8 dot products saturate (x86 without VNNI/AMX), NNCF's default ("first_layer")
        elsewhere."""
        if self.overflow_fix is not None:
            return self
        return dataclasses.replace(self, overflow_fix="enable" if cpu.int8_dot_saturates else "first_layer")


# nncf.OverflowFix members by the names NncfQuantizeConfig.overflow_fix takes.
OVERFLOW_FIX = {"enable": "ENABLE", "first_layer": "FIRST_LAYER", "disable": "DISABLE"}


def _build_openvino_int8(parent: Artifact, out: Path, config: NncfQuantizeConfig, ctx: BuildContext) -> dict:
    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    from compressors.quality.metrics import encode_sentences

    if parent.meta.get("task") == TASK_CAUSAL_LM:
        raise ValueError("openvino-int8 quantizes classifiers; for causal LMs use openvino-int8-wo or openvino-int4-wo")
    _rest, held = ctx.require_data().held_apart()
    sentences = list(held.sentences[: config.calibration_sentences])
    pairs = None if held.pairs is None else list(held.pairs[: config.calibration_sentences])
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    items = encode_sentences(tokenizer, sentences, batch_size=1, pairs=pairs)
    names = parent.meta.get("inputs") or list(items[0])
    items = [{n: item[n] for n in names} for item in items]
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    config = config.for_machine(ctx.cpu)
    fix = getattr(nncf.OverflowFix, OVERFLOW_FIX[config.overflow_fix])
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=fix)
    model = ov.Core().read_model(str(parent.file(OPENVINO_IR)))
    float_ops = layer_operations(parent, model, config.float_layers)
    ignored = {"ignored_scope": nncf.IgnoredScope(names=[n for names in float_ops.values() for n in names])} \
        if float_ops else {}
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items), preset=preset[config.preset], advanced_parameters=advanced,
                              **ignored)
    ov.save_model(quantized, str(out / OPENVINO_IR), compress_to_fp16=False)
    copy_side_files(parent.path, out)
    return {**{k: parent.meta.get(k) for k in ("task", "inputs", "stateful")}, "nncf": nncf.__version__,
            "calibration": {"source": held.source, "sentences": len(sentences), "padding": "none (one per item)"},
            "overflow_fix": config.overflow_fix, "scheme_chosen_for": ctx.cpu.int8_flags(),
            **({"float_layer_operations": {str(i): len(names) for i, names in float_ops.items()}} if float_ops else {})}


def layer_operations(parent: Artifact, model, layers) -> dict[int, list[str]]:
    """Names of the operations of ``model`` (the IR of ``parent``) inside each transformer layer in ``layers``:
    ``openvino.convert_model`` names an operation after the module it came from
    (``__module.bert.encoder.layer.3.attention.self.query/aten::linear/MatMul``; the layer's module path from
    :func:`compressors.execution.nn.folder_layer_prefixes`). Constants are left out (NNCF ignores operations). A
    layer with no operation is an error: quantizing it anyway would pass for a float fallback that is not one."""
    from compressors.execution.nn import checked_layer_prefixes

    if not layers:
        return {}
    prefixes = checked_layer_prefixes(parent.path, layers, "the IR's")
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() != "Constant"]
    found = {}
    for i in sorted(layers):
        scope = f"__module.{prefixes[i]}"
        found[i] = [n for n in names if n.startswith((scope + ".", scope + "/"))]
        if not found[i]:
            raise ValueError(f"no operation of transformer layer {i} ({prefixes[i]}) in {parent.file(OPENVINO_IR)}: "
                             f"none is named {scope}/... or {scope}.*, so the layer cannot be kept float")
    return found


@dataclasses.dataclass(frozen=True)
class NncfWeightCompressionConfig(Config):
    """``nncf.compress_weights`` of a causal-LM IR.

    Args:
        mode: NNCF's ``CompressWeightsMode`` name (``INT8_ASYM``, ``INT4_SYM``, ...).
        group_size: int4 group size (-1: per channel; int8 modes ignore it).
        ratio: share of the linears in int4 (the rest int8, chosen by NNCF's sensitivity).
        awq / scale_estimation: data-aware int4 refinements, calibrated on ``wiki.valid.tokens``.
    """

    mode: str = "INT8_ASYM"
    group_size: int = -1
    ratio: float = 1.0
    awq: bool = False
    scale_estimation: bool = False

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation

    def validate(self) -> None:
        name = type(self).__name__
        check_choice(name, "mode", self.mode, {"INT8_ASYM", "INT8_SYM", "INT4_SYM", "INT4_ASYM"})
        check_range(name, "ratio", self.ratio, 0.0, 1.0)


def lm_calibration_spans(tokens: int) -> list[tuple[int, int]]:
    """``(start, stop)`` token spans of the calibration windows drawn from a ``tokens``-token text (seeded):
    what :func:`_lm_calibration` calibrates on, and what a measurement on the same text must stay clear of
    (the float fallback's sensitivity, compressors/builders/techniques/fallback.py)."""
    length = min(LM_CALIBRATION_TOKENS, tokens // 2)  # a short text (unit tests) gets shorter windows
    count = min(LM_CALIBRATION_WINDOWS, tokens - length)
    starts = np.random.default_rng(0).choice(tokens - length, count, replace=False)
    return [(int(start), int(start) + length) for start in starts]


def _lm_calibration(parent: Artifact, ctx: BuildContext) -> list[dict]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    ids = np.asarray(tokenizer(ctx.require_data().train().text, add_special_tokens=False)["input_ids"], np.int64)
    items = []
    for start, stop in lm_calibration_spans(len(ids)):
        length = stop - start
        window = ids[start:stop][None]
        items.append({"input_ids": window, "attention_mask": np.ones_like(window),
                      "position_ids": np.arange(length, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)})
    return items


def _build_openvino_weights(parent: Artifact, out: Path, config: NncfWeightCompressionConfig,
                            ctx: BuildContext) -> dict:
    import nncf
    import openvino as ov

    if parent.meta.get("task") != TASK_CAUSAL_LM:
        raise ValueError("openvino-int8-wo / -int4-wo compress causal LMs; for classifiers use openvino-int8")
    kwargs = {"mode": getattr(nncf.CompressWeightsMode, config.mode)}
    if config.mode.startswith("INT4"):
        kwargs.update(group_size=config.group_size, ratio=config.ratio)
    if config.data_aware:
        items = _lm_calibration(parent, ctx)
        kwargs.update(dataset=nncf.Dataset(items), subset_size=len(items),
                      awq=config.awq, scale_estimation=config.scale_estimation)
    compressed = nncf.compress_weights(ov.Core().read_model(str(parent.file(OPENVINO_IR))), **kwargs)
    ov.save_model(compressed, str(out / OPENVINO_IR), compress_to_fp16=False)
    copy_side_files(parent.path, out)
    calibration = ({"source": "wikitext-2 wiki.valid.tokens", "windows": len(items),
                    "tokens_per_window": int(items[0]["input_ids"].shape[1]), "seed": 0} if config.data_aware else None)
    return {**{k: parent.meta.get(k) for k in ("task", "inputs", "stateful")}, "nncf": nncf.__version__,
            "calibration": calibration}


# ------------------------------------------------------------------------------------------- registry

_OPENVINO = dict(consumes=OPENVINO_IR_FLOW, produces=OPENVINO_IR_FLOW, devices=frozenset({"cpu"}),
                 artifact_kind="openvino",
                 weights=(OPENVINO_WEIGHTS,), requires=("openvino", "nncf"), version_packages=OPENVINO_LIBS,
                 implies=("openvino-fp32",))


def _int4_config(ratio_percent: int, group_size: int) -> NncfWeightCompressionConfig:
    return NncfWeightCompressionConfig("INT4_SYM", group_size=group_size, ratio=ratio_percent / 100, awq=True,
                                       scale_estimation=True)


def _int4_summary(ratio_percent: int, group_size: int) -> str:
    return (f"nncf.compress_weights INT4_SYM groups of {group_size} on {ratio_percent}% of the linears (the rest "
            "int8), AWQ + scale estimation on wiki.valid.tokens")


_INT4 = dict(build=_build_openvino_weights, tasks=frozenset({TASK_CAUSAL_LM}), kernels=("openvino-fp32",),
             tolerance=None, uses_data=True)  # AWQ and scale estimation calibrate
register_variants(_OPENVINO, [
    dict(name="openvino-fp32", config=OpenVinoExportConfig(), consumes=TORCH_MODEL, build=_build_openvino_fp32,
         tasks=frozenset({TASK_CLASSIFICATION, TASK_CAUSAL_LM}), requires=("openvino",), implies=(),
         kernels=("openvino-fp32",), tolerance=0.001,
         summary="openvino.convert_model to an IR (float32 weights and inference precision), OpenVINO CPU plugin"),
    dict(name="openvino-int8", config=NncfQuantizeConfig(), build=_build_openvino_int8, uses_data=True,
         tasks=frozenset({TASK_CLASSIFICATION}), kernels=("openvino-int8",), tolerance=0.15,
         summary=f"nncf.quantize (TRANSFORMER, {CALIBRATION_SENTENCES} held-apart SST-2 train sentences) of the "
                 "openvino-fp32 IR: int8 weights and activations"),
    dict(name="openvino-int8-wo", config=NncfWeightCompressionConfig("INT8_ASYM"), build=_build_openvino_weights,
         tasks=frozenset({TASK_CAUSAL_LM}), kernels=("openvino-fp32",), tolerance=0.1,
         summary="nncf.compress_weights INT8_ASYM (per-channel int8 weights) of the openvino-fp32 IR"),
    dict(name="openvino-int4-wo", config=_int4_config(80, 64), summary=_int4_summary(80, 64), **_INT4),
])


def _int4_family(match) -> Technique:
    name, ratio_text, group_text = match.group(0, 1, 2)
    if group_text not in {str(g) for g in INT4_GROUP_SIZES}:
        groups = ", ".join(f"g{g}" for g in INT4_GROUP_SIZES)
        raise ChainError(f"technique {name!r}: int4 group size {group_text} is not offered; valid groups: {groups} "
                         "(per-channel, g-1, is not offered)")
    percent = name_knob(name, ratio_text, "int4 share percent", 0, 100,
                        f"openvino-int4-wo-r0-g{group_text} to openvino-int4-wo-r100-g{group_text}")
    group = int(group_text)
    return Technique(**_OPENVINO, **_INT4, name=name, config=_int4_config(percent, group),
                     summary=_int4_summary(percent, group))


register_technique_family(r"openvino-int4-wo-r(\d+)-g(-?\d+)", "openvino-int4-wo-r80-g64", _int4_family)

