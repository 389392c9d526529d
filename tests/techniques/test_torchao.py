import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.execution.runtime import load_predictor

pytest.importorskip("torchao")


@pytest.mark.parametrize("name, act_quant", [("torchao-int8-dyn", True), ("torchao-int8-wo", False)])
def test_torchao_int8_weights_are_int8_and_head_float(tiny_base, ctx, tiny_batch, name, act_quant):
    fp32 = load_predictor(tiny_base)
    artifact = build_chain(tiny_base, parse_chain(name), ctx, "tiny")
    assert artifact.meta["float_linear_modules"] == ["classifier"]
    assert artifact.meta["quantized_linear_modules"] == 2 * 6 + 1
    predictor = load_predictor(artifact)
    weight = predictor.model.bert.encoder.layer[0].attention.self.query.weight
    assert type(weight).__name__ == artifact.meta["weight_tensor"] == "Int8Tensor"
    assert weight.qdata.dtype == torch.int8
    assert (weight.act_quant_kwargs is not None) == act_quant
    assert type(predictor.model.classifier.weight) is torch.nn.Parameter
    # hidden states, not logits: random tiny logits are too small to show int8 error meaningfully
    prepared = predictor.prepare(tiny_batch)
    with torch.inference_mode():
        got = predictor.model.bert(**prepared).last_hidden_state
        ref = fp32.model.bert(**fp32.prepare(tiny_batch)).last_hidden_state
    assert float((got - ref).norm() / ref.norm()) < 0.05
    assert np.isfinite(predictor.logits(prepared)).all()


def test_torchao_artifact_is_smaller_than_fp32(tiny_base, ctx):
    artifact = build_chain(tiny_base, parse_chain("torchao-int8-dyn"), ctx, "tiny")
    assert artifact.weight_bytes < tiny_base.weight_bytes


@pytest.mark.slow
def test_compiled_variant_records_compile_time_outside_timing(tiny_base, ctx, tiny_batch):
    predictor = load_predictor(build_chain(tiny_base, parse_chain("torchao-int8-wo-compiled"), ctx, "tiny"))
    prepared = predictor.prepare(tiny_batch)  # compiles here
    compiled = predictor.placement()["torch_compile"]
    assert list(compiled["first_call_seconds_by_shape"]) == ["x".join(map(str, tiny_batch["input_ids"].shape))]
    assert compiled["first_call_seconds_total"] > 0
    assert np.isfinite(predictor.logits(prepared)).all()
    assert parse_chain("torchao-int8-wo-compiled").slow and not parse_chain("torchao-int8-wo").slow
