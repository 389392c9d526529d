import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.builders.techniques.quantization import DynamicInt8Config, apply_dynamic_int8
from compressors.core.config import ConfigError
from compressors.execution.nn import head_module_names
from compressors.execution.runtime import load_predictor


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_head_is_every_linear_outside_the_encoder(tiny_base):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base.path)
    assert head_module_names(model) == {"classifier"}


def test_dynamic_int8_keeps_head_float_and_stays_close(tiny_base, ctx, tiny_batch):
    fp32 = load_predictor(tiny_base)
    artifact = build_chain(tiny_base, parse_chain("dynamic-int8"), ctx, "tiny")
    int8 = load_predictor(artifact)
    model = int8.model
    assert isinstance(model.classifier, torch.nn.Linear)  # head float
    assert "quantized" in type(model.bert.encoder.layer[0].attention.self.query).__module__
    assert artifact.meta["float_linear_modules"] == ["classifier"]
    ref = fp32.logits(fp32.prepare(tiny_batch))
    got = int8.logits(int8.prepare(tiny_batch))
    assert relative_error(got, ref) < 0.05


def test_reloaded_artifact_matches_in_memory_quantization(tiny_base, ctx, tiny_batch):
    from transformers import AutoModelForSequenceClassification

    in_memory = apply_dynamic_int8(AutoModelForSequenceClassification.from_pretrained(tiny_base.path),
                                   DynamicInt8Config())
    reloaded = load_predictor(build_chain(tiny_base, parse_chain("dynamic-int8"), ctx, "tiny"))
    prepared = reloaded.prepare(tiny_batch)
    with torch.inference_mode():
        expected = in_memory(**prepared).logits.numpy()
    np.testing.assert_allclose(reloaded.logits(prepared), expected, rtol=1e-5, atol=1e-6)


def test_quantize_head_option(tiny_base):
    from transformers import AutoModelForSequenceClassification

    model = apply_dynamic_int8(AutoModelForSequenceClassification.from_pretrained(tiny_base.path),
                               DynamicInt8Config(quantize_head=True))
    assert not isinstance(model.classifier, torch.nn.Linear) or "quantized" in type(model.classifier).__module__


def test_invalid_config_names_value_and_choices():
    with pytest.raises(ConfigError, match=r"dtype='int4'.*'float16', 'qint8'"):
        DynamicInt8Config(dtype="int4")


def test_loader_refuses_gpu(tiny_base, ctx):
    artifact = build_chain(tiny_base, parse_chain("dynamic-int8"), ctx, "tiny")
    with pytest.raises(RuntimeError, match="CPU only"):
        load_predictor(artifact, "cuda")


def test_per_channel_scales_handle_an_outlier_row():
    """One output row 100x larger: per-tensor scales crush the other rows, per-channel do not."""
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 32))
    with torch.no_grad():
        layer[0].weight[0] *= 100
    x = torch.randn(16, 64)
    with torch.no_grad():
        ref = layer(x)[:, 1:]
    errors = {}
    for granularity in ("per-tensor", "per-channel"):
        import copy

        quantized = apply_dynamic_int8(
            copy.deepcopy(layer), DynamicInt8Config(granularity=granularity, quantize_head=True)
        )
        with torch.no_grad():
            errors[granularity] = relative_error(quantized(x)[:, 1:].numpy(), ref.numpy())
    assert errors["per-channel"] < 0.02 < errors["per-tensor"]
