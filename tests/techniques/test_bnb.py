"""bitsandbytes on tiny random models (hidden 64: its CPU 4-bit kernels need in % 64 == 0)."""

import shutil

import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.builders.techniques.bnb import BnbConfig
from compressors.core.config import ConfigError
from compressors.execution.runtime import load_predictor
from tests.conftest import make_tiny_tokenizer

pytest.importorskip("bitsandbytes")


def _save(folder, model, tokenizer):
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def base64(tmp_path, cache):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(tmp_path / "src")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2, initializer_range=0.2)
    source = _save(tmp_path / "src", BertForSequenceClassification(config).eval(), tokenizer)
    return cache.get_or_build(artifact_kind="hf-torch", name="tiny64", recipe={"tiny": 64},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])


@pytest.fixture
def batch64(base64):
    from transformers import AutoTokenizer

    from compressors.quality.metrics import encode_sentences
    from tests.conftest import SENTENCES

    return encode_sentences(AutoTokenizer.from_pretrained(base64.path), SENTENCES, batch_size=8)[0]


# Relative logit error vs fp32 on a random 2-layer model, which amplifies weight error far more
# than a trained one: measured 0.03 (int8), 0.28 (nf4, nf4-dq), 0.22 (fp4). The weight-level
# bound is test_4bit_weights_reconstruct_within_bound.
@pytest.mark.parametrize("name, module_type, weight_dtype, tolerance", [
    ("bnb-int8", "Linear8bitLt", torch.int8, 0.05),
    ("bnb-nf4", "Linear4bit", torch.uint8, 0.35),
    ("bnb-fp4", "Linear4bit", torch.uint8, 0.35),
    ("bnb-nf4-dq", "Linear4bit", torch.uint8, 0.35),
])
def test_bnb_quantizes_encoder_keeps_head_float_and_stays_close(base64, ctx, batch64, name, module_type, weight_dtype,
                                                               tolerance):
    fp32 = load_predictor(base64)
    artifact = build_chain(base64, parse_chain(name), ctx, "tiny64")
    assert artifact.meta["float_linear_modules"] == ["classifier"]
    assert artifact.weight_bytes < 0.75 * base64.weight_bytes  # packed weights on disk
    predictor = load_predictor(artifact)
    model = predictor.model
    query = model.bert.encoder.layer[0].attention.self.query
    assert type(query).__name__ == module_type and query.weight.dtype == weight_dtype
    assert type(model.classifier) is torch.nn.Linear and model.classifier.weight.dtype == torch.float32
    placement = predictor.placement()["bitsandbytes"]
    assert placement["quantized_modules"] == {module_type: 2 * 6 + 1}  # + the pooler
    ref = fp32.logits(fp32.prepare(batch64))
    got = predictor.logits(predictor.prepare(batch64))
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tolerance


@pytest.mark.parametrize("name, bound", [("bnb-nf4", 0.11), ("bnb-fp4", 0.14), ("bnb-nf4-dq", 0.11)])
def test_4bit_weights_reconstruct_within_bound(base64, ctx, name, bound):
    """Dequantized weights of the saved artifact vs the fp32 weights (Gaussian-like: NF4 ~9%, FP4 ~12%)."""
    from bitsandbytes.functional import dequantize_4bit

    from compressors.execution.runtime import load_torch_module

    reference = dict(load_torch_module(base64).named_modules())
    model = load_predictor(build_chain(base64, parse_chain(name), ctx, "tiny64")).model
    checked = 0
    for module_name, module in model.named_modules():
        if type(module).__name__ == "Linear4bit":
            weight = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            original = reference[module_name].weight
            assert float((weight - original).norm() / original.norm()) < bound, module_name
            checked += 1
    assert checked == 2 * 6 + 1


def test_reloaded_4bit_artifact_is_deterministic(base64, ctx, batch64):
    artifact = build_chain(base64, parse_chain("bnb-nf4"), ctx, "tiny64")
    a, b = load_predictor(artifact), load_predictor(artifact)
    np.testing.assert_allclose(a.logits(a.prepare(batch64)), b.logits(b.prepare(batch64)), rtol=0, atol=1e-6)


def test_distilbert_head_stays_float_in_4bit(tmp_path, cache, ctx):
    """The seed's failure: a 4-bit 2-output head; DistilBERT has pre_classifier + classifier."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(tmp_path / "d")
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                              max_position_embeddings=64, num_labels=2)
    source = _save(tmp_path / "d", DistilBertForSequenceClassification(config).eval(), tokenizer)
    base = cache.get_or_build(artifact_kind="hf-torch", name="tinyd", recipe={"d": 1},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])
    artifact = build_chain(base, parse_chain("bnb-nf4"), ctx, "tinyd")
    assert artifact.meta["float_linear_modules"] == ["classifier", "pre_classifier"]
    predictor = load_predictor(artifact)
    logits = predictor.logits(predictor.prepare({"input_ids": np.array([[2, 5, 6, 3]]),
                                                 "attention_mask": np.ones((1, 4), dtype=np.int64)}))
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_misfit_shapes_stay_float_for_4bit(tiny_base, ctx):
    artifact = build_chain(tiny_base, parse_chain("bnb-nf4"), ctx, "tiny")  # hidden 32, intermediate 64
    misfits = artifact.meta["kept_float_for_cpu_kernel_shape"]
    # only the feed-forward output (64 -> 32) has in % 64 == 0 and out % 32 == 0
    assert len(misfits) == 2 * 6 + 1 - 2 and "bert.encoder.layer.0.output.dense" not in misfits
    assert artifact.meta["linear_modules_by_type"]["Linear4bit"] == 2


def test_invalid_config_names_choices():
    with pytest.raises(ConfigError, match=r"quant_type='int4'.*'fp4', 'nf4'"):
        BnbConfig(quant_type="int4")
