"""OpenVINO techniques on tiny models: float32 really means float32, the stateful LM export matches
PyTorch token for token, int8 stays close (the contract test covers build/reload for all of them)."""

import numpy as np
import pytest

from compressors.builders.techniques import build_chain, parse_chain
from compressors.execution.runtime import load_predictor
from tests import cpus

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.mark.slow
def test_classifier_ir_runs_in_float32_and_matches_pytorch_on_other_shapes(tiny_base, ctx, tiny_batch):
    predictor = load_predictor(build_chain(tiny_base, parse_chain("openvino-fp32"), ctx, "tiny"))
    placement = predictor.placement()
    # OpenVINO's CPU plugin would run in bf16 on AVX512-BF16/AMX CPUs unless told otherwise
    assert placement["inference_precision_hint"] == "f32" and placement["execution_devices"] == "['CPU']"
    assert placement["performance_hint"] == "LATENCY"
    torch_pred = load_predictor(tiny_base)
    for batch in (tiny_batch, {k: v[:1, :4] for k, v in tiny_batch.items()}):
        got = predictor.logits(predictor.prepare(batch))
        np.testing.assert_allclose(got, torch_pred.logits(torch_pred.prepare(batch)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_stateful_lm_export_matches_pytorch_logits_and_greedy_tokens(tmp_path, cache, ctx):
    import shutil

    from tests.conftest import save_tiny_causal_lm

    source = save_tiny_causal_lm(tmp_path / "lm", "llama")
    base = cache.get_or_build(artifact_kind="hf-torch", name="tiny-lm", recipe={"ov": 1},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])
    artifact = build_chain(base, parse_chain("openvino-fp32"), ctx, "tiny")
    assert artifact.meta["stateful"] and artifact.meta["task"] == "causal-lm"
    ov_pred, torch_pred = load_predictor(artifact), load_predictor(base)
    ids = {"input_ids": np.array([[3, 9, 12, 5, 7, 2, 11, 4]], dtype=np.int64)}
    np.testing.assert_allclose(ov_pred.logits(ov_pred.prepare(ids)), torch_pred.logits(torch_pred.prepare(ids)),
                               rtol=1e-3, atol=1e-4)
    ids["attention_mask"] = np.ones_like(ids["input_ids"])
    ov_tokens = ov_pred.generate(ov_pred.prepare(ids), 6)
    torch_tokens = torch_pred.generate(torch_pred.prepare(ids), 6).numpy()
    assert ov_tokens.shape == (1, 14) and (ov_tokens == torch_tokens).all()
    assert ov_pred.placement()["kv_cache_precision"] == "f32"


@pytest.mark.parametrize("kind, fix", [
    (cpus.SKYLAKE_SP, "enable"), (cpus.HASWELL, "enable"), (cpus.ZEN4, "first_layer"),
    (cpus.SAPPHIRE_RAPIDS, "first_layer"), (cpus.GRAVITON3, "first_layer"),
])
def test_openvino_int8_overflow_fix_is_chosen_from_the_cpu(kind, fix):
    # without VNNI/AMX, uint8 x int8 dot products saturate: 7-bit weights in every layer (a tiny
    # classifier's logits were 32% off with NNCF's first-layer-only default on an AVX2-only Zen 3)
    from compressors.builders.techniques.openvino import NncfQuantizeConfig

    config = NncfQuantizeConfig()
    assert config.for_machine(cpus.cpu(kind)).overflow_fix == fix
    assert NncfQuantizeConfig(overflow_fix="disable").for_machine(cpus.cpu(kind)).overflow_fix == "disable"
    with pytest.raises(Exception, match="overflow_fix"):
        NncfQuantizeConfig(overflow_fix="sometimes")
