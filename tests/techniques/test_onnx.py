import numpy as np

from compressors.runtime import load_predictor
from compressors.techniques import build_chain, parse_chain


def test_onnx_fp32_matches_pytorch(tiny_base, ctx, tiny_batch):
    torch_pred = load_predictor(tiny_base)
    artifact = build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny")
    ort_pred = load_predictor(artifact)
    assert ort_pred.placement()["providers"] == ["CPUExecutionProvider"]
    assert set(artifact.meta["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    ref = torch_pred.logits(torch_pred.prepare(tiny_batch))
    np.testing.assert_allclose(ort_pred.logits(ort_pred.prepare(tiny_batch)), ref, rtol=1e-4, atol=1e-5)


def test_onnx_dynamic_axes_accept_other_shapes(tiny_base, ctx, tiny_batch):
    ort_pred = load_predictor(build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny"))
    one = {k: v[:1, :3] for k, v in tiny_batch.items()}
    assert ort_pred.logits(ort_pred.prepare(one)).shape == (1, 2)


def test_onnx_int8_is_smaller_and_close(tiny_base, ctx, tiny_batch):
    fp32 = build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny")
    int8 = build_chain(tiny_base, parse_chain("onnx-int8"), ctx, "tiny")
    assert int8.weight_bytes < 0.6 * fp32.weight_bytes
    ref = load_predictor(fp32)
    got = load_predictor(int8)
    a = got.logits(got.prepare(tiny_batch))
    b = ref.logits(ref.prepare(tiny_batch))
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.1
    # the int8 stage reused the cached fp32 export as its parent
    assert int8.manifest["recipe"]["parent"] == fp32.key


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_onnx_optimized_graph_matches_and_records_fusions(tiny_base, ctx, tiny_batch):
    fp32 = load_predictor(build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny"))
    artifact = build_chain(tiny_base, parse_chain("onnx-opt-fp32"), ctx, "tiny")
    assert artifact.meta["fused_operators"].get("SkipLayerNormalization", 0) > 0
    opt = load_predictor(artifact)
    np.testing.assert_allclose(opt.logits(opt.prepare(tiny_batch)), fp32.logits(fp32.prepare(tiny_batch)),
                               rtol=1e-4, atol=1e-5)
    int8 = build_chain(tiny_base, parse_chain("onnx-opt-int8"), ctx, "tiny")
    assert int8.manifest["recipe"]["parent"] == artifact.key
    assert int8.weight_bytes < 0.8 * artifact.weight_bytes  # the tiny model's LayerNorms and biases stay float
    got = load_predictor(int8)
    assert _relative(got.logits(got.prepare(tiny_batch)), fp32.logits(fp32.prepare(tiny_batch))) < 0.1


def test_onnx_static_calibrates_on_train_never_dev(tiny_base, ctx, tiny_batch, monkeypatch):
    import onnx

    from compressors import data
    from tests.techniques.test_layerdrop import toy_train

    calls = []

    def fake_load(split, data_dir=None, **kwargs):
        calls.append(split)
        return toy_train(200)

    monkeypatch.setattr(data, "load_sst2", fake_load)
    artifact = build_chain(tiny_base, parse_chain("onnx-int8-static"), ctx, "tiny")
    assert calls == ["train"]
    assert artifact.meta["calibration"]["sentences"] == 128
    ops = {n.op_type for n in onnx.load(str(artifact.file("model.onnx"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = load_predictor(build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny"))
    got = load_predictor(artifact)
    assert _relative(got.logits(got.prepare(tiny_batch)), fp32.logits(fp32.prepare(tiny_batch))) < 0.15
