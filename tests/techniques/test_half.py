import numpy as np

from compressors.builders.techniques import build_chain, parse_chain
from compressors.execution.runtime import load_predictor


def test_bf16_halves_size_runs_in_bf16_and_stays_close(tiny_base, ctx, tiny_batch):
    artifact = build_chain(tiny_base, parse_chain("bf16"), ctx, "tiny")
    assert abs(artifact.weight_bytes / tiny_base.weight_bytes - 0.5) < 0.05
    assert isinstance(artifact.meta["cpu_native_bf16"], bool)
    predictor = load_predictor(artifact)
    assert predictor.placement()["parameter_dtypes"] == ["bfloat16"]
    ref = load_predictor(tiny_base)
    a, b = predictor.logits(predictor.prepare(tiny_batch)), ref.logits(ref.prepare(tiny_batch))
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05


def test_fp32_artifact_still_loads_in_fp32(tiny_base):
    assert load_predictor(tiny_base).placement()["parameter_dtypes"] == ["float32"]


def test_fp16_is_cuda_only():
    assert parse_chain("fp16").devices == {"cuda"}
