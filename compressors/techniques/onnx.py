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
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

from compressors.cache import Artifact
from compressors.config import Config, check_choice, check_range
from compressors.context import BuildContext
from compressors.models import TASK_CLASSIFICATION, copy_side_files
from compressors.techniques.base import ONNX_GRAPH, TORCH_MODEL, Technique, register_technique

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
            default: on minilm-sst2 per-tensor lost 1.15 pp of dev accuracy,
            per-channel none, at the same size (quantizing only MatMul, leaving
            the embedding Gather in float, lost 0.46 pp and kept 56 MB instead of 21 MB).
        reduce_range: 7-bit weights, for CPUs without VNNI (avoids saturation).
    """

    weight_type: str = "qint8"
    per_channel: bool = True
    reduce_range: bool = False

    def validate(self) -> None:
        check_choice(type(self).__name__, "weight_type", self.weight_type, {"qint8", "quint8"})


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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(parent.path)
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    inputs = export_onnx(model, tokenizer, out / ONNX_FILE, config.opset)
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": inputs, "exporter": "torch.onnx.export(dynamo=True)"}


def _build_onnx_int8(parent: Artifact, out: Path, config: OrtDynamicQuantConfig, ctx: BuildContext) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph = onnx.load(str(parent.file(ONNX_FILE)))
    del graph.graph.value_info[:]
    stripped, preprocessed = out / "stripped.onnx", out / "preprocessed.onnx"
    onnx.save(graph, str(stripped))
    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[config.weight_type]
    # ONNX Runtime's tools drop temporary files into the working directory: give them their own.
    with tempfile.TemporaryDirectory(prefix="compressbench-ort-") as scratch, contextlib.chdir(scratch):
        quant_pre_process(str(stripped), str(preprocessed), skip_symbolic_shape=True)
        quantize_dynamic(
            str(preprocessed), str(out / ONNX_FILE), weight_type=weight_type,
            per_channel=config.per_channel, reduce_range=config.reduce_range,
        )
    stripped.unlink()
    preprocessed.unlink()
    copy_side_files(parent.path, out)
    return {"onnx_file": ONNX_FILE, "inputs": parent.meta.get("inputs")}


register_technique(Technique(
    name="onnx-fp32",
    summary="ONNX export (torch.onnx dynamo exporter) run by ONNX Runtime, float32",
    config=OnnxExportConfig(),
    consumes=TORCH_MODEL,
    produces=ONNX_GRAPH,
    tasks=frozenset({TASK_CLASSIFICATION}),
    devices=frozenset({"cpu", "cuda"}),
    build=_build_onnx_fp32,
    artifact_kind="onnx",
    weights=(ONNX_FILE,),
    requires=("onnx", "onnxruntime", "onnxscript"),
    version_packages=ONNX_LIBS,
))

register_technique(Technique(
    name="onnx-int8",
    summary="ONNX Runtime dynamic quantization (quantize_dynamic, int8 weights) of the onnx-fp32 graph",
    config=OrtDynamicQuantConfig(),
    consumes=ONNX_GRAPH,
    produces=ONNX_GRAPH,
    tasks=frozenset({TASK_CLASSIFICATION}),
    devices=frozenset({"cpu"}),
    build=_build_onnx_int8,
    artifact_kind="onnx",
    weights=(ONNX_FILE,),
    requires=("onnx", "onnxruntime"),
    implies=("onnx-fp32",),
    version_packages=ONNX_LIBS,
))
