"""compressors/machine/placement.py: catching a GPU configuration that silently runs (partly) on the CPU.

There is no GPU here, so "on CUDA" is simulated with torch's fake tensors: real ``FakeTensor``
objects that report ``device == cuda:N`` without memory. Everything else is real: tiny BERT
models, bitsandbytes layers, ONNX Runtime sessions and their profiles.
"""

from __future__ import annotations

import json
import types
import warnings

import pytest

from compressors.machine.placement import (
    FALLBACK_PREFIX,
    FallbackWarning,
    device_matches,
    fallback_parts,
    ort_placement,
    ort_profiled_node_providers,
    torch_placement,
)


def fake_cuda(tensor, index: int = 0):
    """A tensor of the same shape and dtype that says it lives on ``cuda:index``."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    return FakeTensor(FakeTensorMode(allow_non_fake_inputs=True), tensor.detach().to("meta"),
                      torch.device("cuda", index))


def move_to_fake_cuda(model, keep_on_cpu=lambda name: False, index: int = 0):
    """Put every parameter and buffer on (fake) ``cuda:index``, except those ``keep_on_cpu`` names."""
    import torch

    for kind in ("_parameters", "_buffers"):
        for prefix, module in model.named_modules():
            for leaf, tensor in list(getattr(module, kind).items()):
                name = f"{prefix}.{leaf}" if prefix else leaf
                if tensor is None or keep_on_cpu(name):
                    continue
                moved = fake_cuda(tensor, index)
                getattr(module, kind)[leaf] = (
                    torch.nn.Parameter(moved, requires_grad=False) if kind == "_parameters" else moved
                )
    return model


def tiny_bert():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def test_device_matches():
    assert device_matches("cuda:0", "cuda") and device_matches("cuda:1", "cuda")
    assert device_matches("cuda:0", "cuda:0") and not device_matches("cuda:1", "cuda:0")
    assert not device_matches("cpu", "cuda") and device_matches("cpu", "cpu")


def test_model_wholly_on_the_gpu_passes():
    from compressors.execution.runtime import TorchPredictor

    placement = TorchPredictor(move_to_fake_cuda(tiny_bert()), "cuda:0").placement()
    assert placement["tensor_devices"] == {"cuda:0": placement["tensor_devices"]["cuda:0"]}
    assert placement["off_device_count"] == 0 and fallback_parts(placement) == []


def test_model_half_on_cpu_is_caught_with_the_offending_parts():
    from compressors.execution.runtime import TorchPredictor

    model = move_to_fake_cuda(
        tiny_bert(), keep_on_cpu=lambda name: ".layer.1." in name or name.startswith("classifier")
    )
    placement = TorchPredictor(model, "cuda:0").placement()
    parts = fallback_parts(placement)
    assert len(parts) == 1
    on_cpu = sum(1 for n, _ in model.named_parameters() if ".layer.1." in n or n.startswith("classifier"))
    total = sum(placement["tensor_devices"].values())
    assert parts[0].startswith(f"{on_cpu} of {total} parameters/buffers not on cuda:0: ")
    assert "parameter bert.encoder.layer.1.attention.self.query.weight on cpu" in parts[0]
    assert parts[0].endswith(f"... and {on_cpu - 8} more")  # the whole list is not dumped
    assert placement["tensor_devices"]["cpu"] == on_cpu


def test_buffers_left_on_cpu_are_caught():
    model = move_to_fake_cuda(tiny_bert(), keep_on_cpu=lambda name: name.endswith("position_ids"))
    parts = fallback_parts(torch_placement(model, "cuda"))
    assert parts and "buffer bert.embeddings.position_ids on cpu" in parts[0]


def test_model_on_another_gpu_than_requested_is_caught():
    placement = torch_placement(move_to_fake_cuda(tiny_bert(), index=1), "cuda:0")
    assert placement["off_device_count"] > 0 and "on cuda:1" in fallback_parts(placement)[0]
    assert fallback_parts(torch_placement(move_to_fake_cuda(tiny_bert(), index=1), "cuda")) == []


def test_cpu_configurations_never_count_as_fallback_but_record_placement():
    placement = torch_placement(tiny_bert(), "cpu")
    assert placement["requested_device"] == "cpu" and placement["off_device_count"] == 0
    assert list(placement["tensor_devices"]) == ["cpu"] and fallback_parts(placement) == []


def bnb_model(on_cuda: bool):
    import bitsandbytes as bnb
    import torch

    model = torch.nn.Sequential(
        bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False),
        bnb.nn.Linear4bit(32, 64, quant_type="nf4"),
        torch.nn.Linear(64, 2),
    ).to("cpu")
    if on_cuda:
        state = model[1].weight.quant_state
        move_to_fake_cuda(model)
        model[1].weight.quant_state = types.SimpleNamespace(absmax=fake_cuda(state.absmax))
    return model


CUDA_LIBRARY = {"backend": "CUDA", "native_library": "libbitsandbytes_cuda128.so"}


def test_bitsandbytes_layers_on_cpu_are_caught():
    placement = torch_placement(bnb_model(on_cuda=False), "cuda:0", bnb_library=CUDA_LIBRARY)
    assert placement["bitsandbytes_layers"]["count"] == 2
    parts = fallback_parts(placement)
    layer_part = next(p for p in parts if "bitsandbytes layers" in p)
    assert layer_part.startswith("2 of 2 bitsandbytes layers not on cuda:0: ")
    assert (
        "Linear8bitLt 0 (weight on cpu, SCB on cpu)" in layer_part
        and "Linear4bit 1 (weight on cpu, absmax on cpu)" in layer_part
    )


def test_bitsandbytes_quant_state_left_on_cpu_is_caught():
    import torch

    model = bnb_model(on_cuda=True)
    model[1].weight.quant_state = types.SimpleNamespace(absmax=torch.zeros(4))  # the scales stayed on the CPU
    parts = fallback_parts(torch_placement(model, "cuda:0", bnb_library=CUDA_LIBRARY))
    assert parts == ["1 of 2 bitsandbytes layers not on cuda:0: Linear4bit 1 (weight on cuda:0, absmax on cpu)"]


def test_bitsandbytes_on_cuda_passes_only_with_its_cuda_backend():
    placement = torch_placement(bnb_model(on_cuda=True), "cuda:0", bnb_library=CUDA_LIBRARY)
    assert fallback_parts(placement) == []
    cpu_library = {"backend": "CPU", "native_library": "/site-packages/bitsandbytes/libbitsandbytes_cpu.so"}
    parts = fallback_parts(torch_placement(bnb_model(on_cuda=True), "cuda:0", bnb_library=cpu_library))
    assert parts == [
        "bitsandbytes runs its CPU backend (/site-packages/bitsandbytes/libbitsandbytes_cpu.so), not CUDA kernels"
    ]


def test_bitsandbytes_library_of_this_machine_is_recorded():
    placement = torch_placement(bnb_model(on_cuda=False), "cpu")
    assert placement["bitsandbytes_library"]["backend"] in ("CPU", "CUDA", "ROCm", "XPU")
    assert fallback_parts(placement) == []


# ---------------------------------------------------------------------------------- ONNX Runtime


@pytest.fixture
def tiny_onnx(tmp_path):
    """x[N,4] -> MatMul W[4,2] -> Softmax, with a Shape node."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2) / 8, "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
            helper.make_node("Softmax", ["h"], ["y"], name="softmax", axis=-1),
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path


def test_ort_session_with_cpu_provider_first_is_caught(tiny_onnx):
    import onnxruntime as ort

    from compressors.execution.runtime import OrtPredictor

    # What a CUDA request gets when ONNX Runtime cannot create its CUDA provider: a CPU session.
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    placement = OrtPredictor(session, "cuda:0", str(tiny_onnx), ["CPUExecutionProvider"]).placement()
    assert placement["providers"] == ["CPUExecutionProvider"]
    assert fallback_parts(placement) == [
        "ONNX Runtime session providers are ['CPUExecutionProvider'] (not led by CUDAExecutionProvider)"
    ]
    assert fallback_parts(OrtPredictor(session, "cpu").placement()) == []


def test_ort_node_placement_comes_from_a_real_profile(tiny_onnx):
    import numpy as np
    import onnxruntime as ort

    from compressors.execution.runtime import OrtPredictor

    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    predictor = OrtPredictor(session, "cpu", str(tiny_onnx), ["CPUExecutionProvider"])
    nodes = predictor.profile_node_providers({"x": np.ones((3, 4), dtype=np.float32)})
    assert nodes == {"CPUExecutionProvider": {"MatMul": 1, "Shape": 1, "Softmax": 1}}
    assert predictor.placement()["node_providers"] == nodes


class CudaSession:
    """A session that reports the providers a CUDA session reports (the CPU one is always appended)."""

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_ort_compute_nodes_on_cpu_in_a_cuda_session_are_caught():
    nodes = {"CUDAExecutionProvider": {"MatMul": 30}, "CPUExecutionProvider": {"MatMulInteger": 6, "Shape": 4}}
    assert fallback_parts(ort_placement(CudaSession(), "cuda:0", nodes)) == [
        "ONNX Runtime ran compute nodes on CPUExecutionProvider: MatMulInteger x6"
    ]


def test_ort_cuda_session_with_only_shape_nodes_on_cpu_passes():
    nodes = {"CUDAExecutionProvider": {"MatMul": 36, "Softmax": 6}, "CPUExecutionProvider": {"Shape": 4, "Concat": 2}}
    assert fallback_parts(ort_placement(CudaSession(), "cuda:0", nodes)) == []
    assert fallback_parts(ort_placement(CudaSession(), "cuda:0")) == []  # not profiled: providers only


def test_profile_parsing_counts_each_node_once(tmp_path):
    events = [
        {"cat": "Session", "name": "model_run"},
        {"cat": "Node", "name": "matmul_fence_before", "args": {"op_name": "MatMul"}},
        {
            "cat": "Node",
            "name": "matmul_kernel_time",
            "args": {"op_name": "MatMul", "provider": "CUDAExecutionProvider"},
        },
        {
            "cat": "Node",
            "name": "matmul_kernel_time",
            "args": {"op_name": "MatMul", "provider": "CUDAExecutionProvider"},
        },
        {
            "cat": "Node",
            "name": "dq_kernel_time",
            "args": {"op_name": "DynamicQuantizeLinear", "provider": "CPUExecutionProvider"},
        },
    ]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events))
    assert ort_profiled_node_providers(path) == {
        "CPUExecutionProvider": {"DynamicQuantizeLinear": 1},
        "CUDAExecutionProvider": {"MatMul": 1},
    }


# ---------------------------------------------------------------------------------- --on-fallback


class FakeConfig:
    def __init__(self, on_fallback):
        self.on_fallback = on_fallback

    def getoption(self, name, default=None):
        return self.on_fallback if name == "--on-fallback" else default


class FakePredictor:
    def __init__(self, placement):
        self._placement = placement

    def placement(self):
        return self._placement


def check(mode, ctx, measured_placement, timed_placement):
    from bench.cases import cases
    from bench.resources import Resources
    from bench.rows import Rows
    from compressors.core.task_kinds import TASK_CLASSIFICATION

    case = next(c for c in cases(TASK_CLASSIFICATION, ["minilm-sst2"], ["fp32"], tiers=("t4",), batch_sizes=(32,)))
    from compressors.records.results import Identity, Placement, ResultRow

    row = ResultRow(Identity("minilm-sst2", "fp32", "t4", 32), placement=Placement(placement=measured_placement))
    row = Rows(Resources(ctx, FakeConfig(mode)), {}).check_placement(case, row, FakePredictor(timed_placement))
    return row.placement.fallback, {
        "fallback": row.placement.fallback,
        "timed_placement": row.placement.timed_placement,
    }


def test_on_fallback_fail_xfail_warn(ctx):
    half = move_to_fake_cuda(tiny_bert(), keep_on_cpu=lambda name: name.startswith("classifier"))
    bad, good = torch_placement(half, "cuda:0"), torch_placement(move_to_fake_cuda(tiny_bert()), "cuda:0")
    expected = "minilm-sst2-fp32-t4-bs32 " + FALLBACK_PREFIX + "timed process: 2 of"
    with pytest.raises(pytest.fail.Exception) as failed:
        check("fail", ctx, good, bad)
    assert str(failed.value).startswith(expected) and "parameter classifier.weight on cpu" in str(failed.value)
    with pytest.raises(pytest.xfail.Exception, match="fell back to CPU: measurement process: 2 of"):
        check("xfail", ctx, bad, good)
    with pytest.warns(FallbackWarning, match="fell back to CPU: measurement process: .*; timed process: "):
        parts, results = check("warn", ctx, bad, bad)
    assert len(parts) == 2 and results["fallback"] == parts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts, results = check("fail", ctx, good, good)
    assert parts == [] and results["fallback"] == []
