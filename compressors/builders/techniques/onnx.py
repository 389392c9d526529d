"""ONNX Runtime techniques.

``onnx-fp32``: the PyTorch model exported to ONNX with ``torch.onnx.export``'s
dynamo exporter (PyTorch's maintained one), dynamic batch and sequence axes, run
by ONNX Runtime. The TorchScript exporter (``dynamo=False``) is not used: with
torch 2.13 and transformers 5 it baked the export sample's attention-mask shape
into the graph and gave wrong logits on other inputs (tests/techniques/test_onnx.py
checks ONNX against PyTorch on a batch unlike the export sample).

``onnx-int8``: that graph through ``onnxruntime.quantization.quantize_dynamic``
(int8 weights with per-channel scales, activations quantized at run time;
ONNX Runtime's default operator set, embeddings' Gather included) after ONNX Runtime's
pre-processing (ONNX shape inference + graph cleanup). The exporter's recorded
intermediate shapes (``value_info``, concrete for the export sample) are dropped
first, since ONNX Runtime's shape inference rejects them against the dynamic axes.

``onnx-int8-static``: ONNX Runtime static quantization (``quantize_static``, QDQ format):
int8 weights per channel and uint8 activations whose ranges are calibrated once, on
:data:`CALIBRATION_SENTENCES` SST-2 *train* sentences (the first ones of the held-apart
slice, :func:`compressors.quality.data.split_held_apart`; never dev), padded to 128 tokens,
Percentile calibration. Only MatMul and Gather are quantized, and of the MatMuls only those with a
weight, with their outputs left float (no QDQ pair after each MatMul): the per-tensor requantization
of every MatMul output was most of the error (1.83 pp on minilm-sst2 before, 0.34 pp after). The
operator set, unsigned activations, Percentile calibration and these exclusions were each chosen
against measured alternatives on the held-apart slice (see docs/decisions/onnx-int8-recipes.md).

``onnx-opt-fp32`` / ``onnx-opt-int8``: ONNX Runtime's transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``, ``model_type="bert"``) fuses the
exported graph (SkipLayerNormalization, BiasGelu, ...; the fused-operator counts go into
``artifact_meta.fused_operators``) and ``onnx-opt-int8`` quantizes the fused graph like
``onnx-int8``, so fusion and quantization show up separately. On the dynamo exporter's
graph the optimizer does not fuse Attention (its scaled-dot-product pattern keeps an
IsNaN/Where the fusion does not recognise); the counts say what was fused.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from compressors.builders.context import BuildContext
from compressors.builders.techniques.base import ONNX_GRAPH, TORCH_MODEL, register_variants
from compressors.core.cache import Artifact
from compressors.core.config import Config, ConfigError, check_choice, check_float_layers, check_range, keyed_when_set
from compressors.core.scratch import scratch_dir
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.execution.hf import copy_side_files
from compressors.execution.runtime import load_torch_module

# config.json model types the optimizer's "bert" fusion patterns fit (BERT, MiniLM, RoBERTa, DistilBERT, ...)
OPTIMIZER_BERT_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"})

ONNX_FILE = "model.onnx"
ONNX_LIBS = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")


@dataclasses.dataclass(frozen=True)
class OnnxExportConfig(Config):
    """Export to ONNX with dynamic batch and sequence axes.

    Args:
        opset: ONNX opset version.
    """

    opset: int = 18

    def validate(self) -> None:
        check_range(type(self).__name__, "opset", self.opset, 14, 21)


@dataclasses.dataclass(frozen=True)
class OrtDynamicQuantConfig(Config):
    """ONNX Runtime dynamic quantization (``quantize_dynamic``).

    Args:
        weight_type: ``qint8`` or ``quint8`` weights.
        per_channel: one scale per output channel instead of per tensor. On by
            default, the more accurate on minilm-sst2 at the same size; see
            docs/decisions/onnx-int8-recipes.md.
        reduce_range: 7-bit weights (ONNX Runtime's remedy for CPUs whose uint8 x int8 dot
            products saturate, :data:`compressors.machine.hardware.INT8_SATURATION_RULE`); ``None``
            (default): chosen from the CPU the artifact is built for, see :func:`int8_scheme`.
    """

    weight_type: str = "qint8"
    per_channel: bool = True
    reduce_range: bool | None = None

    def validate(self) -> None:
        check_choice(type(self).__name__, "weight_type", self.weight_type, {"qint8", "quint8"})
        _check_reduce_range(self)

    def for_machine(self, cpu) -> OrtDynamicQuantConfig:
        return _resolve_reduce_range(self, cpu)


INT8_SCHEMES = {
    False: "u8s8: uint8 activations x int8 weights, full 8-bit",
    True: "u8s8-reduce-range: uint8 activations x 7-bit weights (no int16 saturation without VNNI/AMX)",
}


def int8_scheme(cpu) -> bool:
    """``reduce_range`` for ``cpu``: 7-bit weights where its uint8 x int8 dot products saturate
    (x86 without VNNI/AMX, :data:`compressors.machine.hardware.INT8_SATURATION_RULE`), full 8-bit elsewhere;
    see docs/decisions/int8-scheme-by-cpu.md."""
    return bool(cpu.int8_dot_saturates)


def _check_reduce_range(config) -> None:
    if config.reduce_range not in (None, True, False):
        raise ConfigError(f"{type(config).__name__}.reduce_range={config.reduce_range!r} is not valid; "
                          "choose True, False or None (chosen from the CPU)")


def _resolve_reduce_range(config, cpu):
    if config.reduce_range is not None:
        return config
    return dataclasses.replace(config, reduce_range=int8_scheme(cpu))


def _scheme_meta(config, ctx: BuildContext) -> dict:
    """What the artifact records about its int8 scheme and the CPU facts that chose it."""
    return {"int8_scheme": INT8_SCHEMES[config.reduce_range].split(":")[0], "reduce_range": config.reduce_range,
            "scheme_chosen_for": ctx.cpu.int8_flags()}


def export_onnx(model, tokenizer, out_file: Path, opset: int) -> list[str]:
    """Export a Hugging Face classifier with dynamic batch/sequence axes; returns its input names."""
    import inspect

    import torch

    accepted = set(inspect.signature(model.forward).parameters)
    input_names = [n for n in tokenizer.model_input_names if n in accepted]
    # Two sentences of different lengths, so the sample has padding and a real attention mask.
    sample = tokenizer(["a short sample sentence for export", "another one"], padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad():
        torch.onnx.export(
            model.eval(), (), str(out_file), kwargs={n: sample[n] for n in input_names},
            input_names=input_names, output_names=["logits"],
            dynamic_shapes={n: {0: batch, 1: sequence} for n in input_names},
            opset_version=opset, dynamo=True, external_data=False, verbose=False,
        )
    return input_names


def _build_onnx_fp32(parent: Artifact, out: Path, config: OnnxExportConfig, ctx: BuildContext) -> dict:
    from transformers import AutoTokenizer

    model = load_torch_module(parent)
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    inputs = export_onnx(model, tokenizer, out / ONNX_FILE, config.opset)
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": inputs, "exporter": "torch.onnx.export(dynamo=True)"}


def _build_onnx_int8(parent: Artifact, out: Path, config: OrtDynamicQuantConfig, ctx: BuildContext) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    target = (out / ONNX_FILE).resolve()
    # ONNX Runtime's tools drop temporary files into the working directory: give them their own.
    with scratch_dir("ort") as scratch, contextlib.chdir(scratch):
        preprocessed = _preprocessed_copy(parent, Path(scratch))
        quantize_dynamic(
            str(preprocessed), str(target), weight_type=_quant_types(config.weight_type),
            per_channel=config.per_channel, reduce_range=config.reduce_range,
        )
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": parent.meta.get("inputs"), **_scheme_meta(config, ctx)}


CALIBRATION_SENTENCES = 128
CALIBRATION_LENGTH = 128


@dataclasses.dataclass(frozen=True)
class OrtStaticQuantConfig(Config):
    """ONNX Runtime static QDQ quantization.

    Args:
        calibration_sentences: SST-2 train sentences the activation ranges are calibrated on.
        calibrate_method: ``percentile``, ``minmax`` or ``entropy``.
        activation_type / weight_type: ``quint8`` or ``qint8``.
        op_types: operators quantized.
        reduce_range: 7-bit weights; ``None`` (default): chosen from the CPU, as for
            :class:`OrtDynamicQuantConfig` (the QDQ graph runs on the same u8s8 kernels).
        quantize_activation_matmuls: also quantize the MatMuls of two activations (attention
            scores and context); off: only MatMuls with a weight are quantized.
        quantize_matmul_outputs: put a QDQ pair on every quantized MatMul's output too (ONNX
            Runtime's default); off: outputs stay float, the source of most of the error.
            Chosen on the held-apart slice: docs/decisions/onnx-int8-recipes.md.
        float_layers: indices of transformer layers whose nodes of ``op_types`` are left float
            (``nodes_to_exclude``, :func:`layer_nodes`); the float fallback ``onnx-int8-static-fbN``
            chooses them (compressors/builders/techniques/fallback.py).
    """

    calibration_sentences: int = CALIBRATION_SENTENCES
    calibrate_method: str = "percentile"
    activation_type: str = "quint8"
    weight_type: str = "qint8"
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    reduce_range: bool | None = None
    quantize_activation_matmuls: bool = False
    quantize_matmul_outputs: bool = False
    float_layers: tuple[int, ...] = keyed_when_set(())

    def validate(self) -> None:
        name = type(self).__name__
        check_float_layers(self)
        check_range(name, "calibration_sentences", self.calibration_sentences, 1, 4096)
        check_choice(name, "calibrate_method", self.calibrate_method, {"percentile", "minmax", "entropy"})
        check_choice(name, "activation_type", self.activation_type, {"qint8", "quint8"})
        check_choice(name, "weight_type", self.weight_type, {"qint8", "quint8"})
        _check_reduce_range(self)

    def for_machine(self, cpu) -> OrtStaticQuantConfig:
        return _resolve_reduce_range(self, cpu)


@dataclasses.dataclass(frozen=True)
class OrtOptimizeConfig(Config):
    """ONNX Runtime transformer optimizer.

    Args:
        model_type: the optimizer's fusion patterns (``bert`` covers BERT, RoBERTa, MiniLM, DistilBERT).
        opt_level: graph optimization level it runs at (0: fusions only, portable across machines;
            higher levels write hardware-specific graphs and fused no more here).
    """

    model_type: str = "bert"
    opt_level: int = 0

    def validate(self) -> None:
        check_choice(type(self).__name__, "model_type", self.model_type, {"bert"})
        check_range(type(self).__name__, "opt_level", self.opt_level, 0, 2)


def _quant_types(name: str):
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def _preprocessed_copy(parent: Artifact, scratch: Path) -> Path:
    """``parent``'s graph without the exporter's value_info, through ONNX Runtime's pre-processing."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph = onnx.load(str(parent.file(ONNX_FILE)))
    del graph.graph.value_info[:]
    stripped, preprocessed = scratch / "stripped.onnx", scratch / "preprocessed.onnx"
    onnx.save(graph, str(stripped))
    quant_pre_process(str(stripped), str(preprocessed), skip_symbolic_shape=True)
    return preprocessed


def _build_onnx_int8_static(parent: Artifact, out: Path, config: OrtStaticQuantConfig, ctx: BuildContext) -> dict:
    import json

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
    from transformers import AutoTokenizer

    _rest, held = ctx.require_data().held_apart()
    sentences = list(held.sentences[: config.calibration_sentences])
    pairs = None if held.pairs is None else list(held.pairs[: config.calibration_sentences])
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    inputs = parent.meta.get("inputs") or list(tokenizer.model_input_names)
    # Fixed-length padding: the histogram calibrators (percentile, entropy) stack batches.
    positions = json.loads((parent.path / "config.json").read_text()).get("max_position_embeddings", CALIBRATION_LENGTH)
    length = min(CALIBRATION_LENGTH, positions)
    batches = []
    for start in range(0, len(sentences), 32):
        enc = tokenizer(sentences[start : start + 32], None if pairs is None else pairs[start : start + 32],
                        padding="max_length", truncation=True,
                        max_length=length, return_tensors="np")
        batches.append({k: enc[k].astype("int64") for k in inputs})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(batches)

    method = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
              "entropy": CalibrationMethod.Entropy}[config.calibrate_method]
    target = (out / ONNX_FILE).resolve()
    with scratch_dir("ort") as scratch, contextlib.chdir(scratch):
        preprocessed = _preprocessed_copy(parent, Path(scratch))
        excluded = [] if config.quantize_activation_matmuls else activation_matmuls(preprocessed)
        float_nodes = layer_nodes(parent, preprocessed, config.float_layers, config.op_types)
        excluded = list(dict.fromkeys([*excluded, *(n for names in float_nodes.values() for n in names)]))
        extra = {} if config.quantize_matmul_outputs else {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
        quantize_static(
            str(preprocessed), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=_quant_types(config.activation_type), weight_type=_quant_types(config.weight_type),
            calibrate_method=method, op_types_to_quantize=list(config.op_types), reduce_range=config.reduce_range,
            nodes_to_exclude=excluded, extra_options=extra,
        )
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": parent.meta.get("inputs"), **_scheme_meta(config, ctx),
            "calibration": {"source": held.source, "sentences": len(sentences), "padded_to": length},
            "float_matmuls": excluded, "matmul_outputs_quantized": config.quantize_matmul_outputs,
            **({"float_layer_nodes": {str(i): names for i, names in float_nodes.items()}} if float_nodes else {})}


# the dynamo exporter's record of the module path of every node (a Python list literal)
ONNX_NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def layer_nodes(parent: Artifact, model_file: Path, layers, op_types) -> dict[int, list[str]]:
    """Names of the nodes of ``op_types`` in ``model_file`` (``parent``'s graph after pre-processing, which keeps
    node names but drops their metadata) that belong to each transformer layer in ``layers``.

    A node belongs to layer ``i`` when the module path the dynamo exporter recorded for it in ``parent``'s graph
    (:data:`ONNX_NAME_SCOPES`) passes through that layer's module (``bert.encoder.layer.3``, from
    :func:`compressors.execution.nn.folder_layer_prefixes`): its names (``node_MatMul_82``) do not carry the
    layer. A graph without that metadata (the TorchScript exporter's) carries it in the name instead
    (``/bert/encoder/layer.3/...``). A layer with no such node is an error: quantizing it anyway would pass
    for a float fallback that is not one."""
    import ast

    import onnx

    from compressors.execution.nn import checked_layer_prefixes

    if not layers:
        return {}
    prefixes = checked_layer_prefixes(parent.path, layers, "the graph's")
    exported = onnx.load(str(parent.file(ONNX_FILE)), load_external_data=False).graph
    scopes = {}
    for node in exported.node:
        recorded = next((p.value for p in node.metadata_props if p.key == ONNX_NAME_SCOPES), None)
        scopes[node.name] = set(ast.literal_eval(recorded)) if recorded else None
    present = [node.name for node in onnx.load(str(model_file), load_external_data=False).graph.node
               if node.op_type in op_types]
    found = {}
    for i in sorted(layers):
        stack, _, index = prefixes[i].rpartition(".")
        path = "/" + stack.replace(".", "/") + f".{index}/"
        found[i] = [name for name in present if (prefixes[i] in scopes[name] if scopes.get(name) is not None
                                                  else name.startswith(path))]
        if not found[i]:
            raise ValueError(f"no {'/'.join(op_types)} node of transformer layer {i} ({prefixes[i]}) in "
                             f"{parent.file(ONNX_FILE)}: neither its exporter's {ONNX_NAME_SCOPES} metadata nor a "
                             f"node name ({path}...) places one there, so the layer cannot be kept float")
    return found


def activation_matmuls(model_file: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is not a weight (attention scores and context:
    activation x activation). ``MatMulConstBOnly`` does not exclude them in QDQ format (ONNX Runtime
    1.32's QDQ MatMul quantizer never reads it), so they are excluded by name."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] not in weights]


def _build_onnx_optimized(parent: Artifact, out: Path, config: OrtOptimizeConfig, ctx: BuildContext) -> dict:
    import json

    from onnxruntime.transformers.optimizer import optimize_model

    model_config = json.loads((parent.path / "config.json").read_text())
    heads = model_config.get("num_attention_heads", model_config.get("n_heads", 0))
    hidden = model_config.get("hidden_size", model_config.get("dim", 0))
    optimized = optimize_model(str(parent.file(ONNX_FILE)), model_type=config.model_type, num_heads=heads,
                               hidden_size=hidden, opt_level=config.opt_level, use_gpu=False)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    del optimized.model.graph.value_info[:]  # the export sample's concrete shapes (see onnx-int8)
    optimized.save_model_to_file(str(out / ONNX_FILE))
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": parent.meta.get("inputs"), "fused_operators": fused}


def _build_onnx_opt_int8(parent: Artifact, out: Path, config: OrtDynamicQuantConfig, ctx: BuildContext) -> dict:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    target = (out / ONNX_FILE).resolve()
    with scratch_dir("ort") as scratch, contextlib.chdir(scratch):
        # ONNX shape inference cannot see through the fused com.microsoft operators: declare float.
        quantize_dynamic(str(parent.file(ONNX_FILE)), str(target), weight_type=_quant_types(config.weight_type),
                         per_channel=config.per_channel, reduce_range=config.reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": parent.meta.get("inputs"), **_scheme_meta(config, ctx),
            "fused_operators": parent.meta.get("fused_operators")}


_ONNX = dict(consumes=ONNX_GRAPH, produces=ONNX_GRAPH, tasks=frozenset({TASK_CLASSIFICATION}),
             devices=frozenset({"cpu"}), artifact_kind="onnx", weights=(ONNX_FILE,), requires=("onnx", "onnxruntime"),
             implies=("onnx-fp32",), version_packages=ONNX_LIBS)
register_variants(
    _ONNX,
    [
        dict(
            name="onnx-fp32",
            config=OnnxExportConfig(),
            consumes=TORCH_MODEL,
            devices=frozenset({"cpu", "cuda"}),
            build=_build_onnx_fp32,
            requires=("onnx", "onnxruntime", "onnxscript"),
            implies=(),
            summary="ONNX export (torch.onnx dynamo exporter) run by ONNX Runtime, float32",
        ),
        dict(
            name="onnx-int8",
            kernels=("ort-dynamic-int8",),
            config=OrtDynamicQuantConfig(),
            build=_build_onnx_int8,
            tolerance=0.1,
            summary="ONNX Runtime dynamic quantization (quantize_dynamic, int8 weights) of the onnx-fp32 graph",
        ),
        dict(
            name="onnx-int8-static",
            kernels=("ort-qdq-int8",),
            config=OrtStaticQuantConfig(),
            build=_build_onnx_int8_static,
            uses_data=True,  # calibration
            tolerance=0.15,
            summary=f"ONNX Runtime static QDQ quantization (int8 weights, uint8 activations calibrated on "
            f"{CALIBRATION_SENTENCES} SST-2 train sentences) of the onnx-fp32 graph",
        ),
        dict(
            name="onnx-opt-fp32",
            config=OrtOptimizeConfig(),
            build=_build_onnx_optimized,
            model_types=OPTIMIZER_BERT_TYPES,
            devices=frozenset({"cpu", "cuda"}),
            summary="the onnx-fp32 graph fused by ONNX Runtime's transformer optimizer (model_type bert), float32",
        ),
        dict(
            name="onnx-opt-int8",
            kernels=("ort-dynamic-int8",),
            config=OrtDynamicQuantConfig(),
            build=_build_onnx_opt_int8,
            implies=("onnx-opt-fp32",),
            tolerance=0.1,
            summary="the fused onnx-opt-fp32 graph through ONNX Runtime quantize_dynamic (int8 weights, per channel)",
        ),
    ],
)
