import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.builders.techniques.absmax import AbsmaxInt8Config, absmax_quantize, apply_absmax_int8
from compressors.core.config import ConfigError
from compressors.execution.nn import select_linears
from compressors.execution.runtime import load_predictor
from tests.conftest import toy_data


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    noise = (reference - approx).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def test_int8_reconstruction_sqnr_on_gaussian_weights():
    torch.manual_seed(0)
    w = torch.randn(256, 128)
    for granularity, floor_db in (("per-tensor", 30.0), ("per-channel", 32.0)):
        q, scale = absmax_quantize(w, granularity)
        assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
        assert sqnr_db(w, q.float() * scale) > floor_db


def test_per_channel_scales_survive_an_outlier_channel():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    w[3] *= 200  # one outlier output channel
    normal = torch.arange(64) != 3
    per_tensor = absmax_quantize(w, "per-tensor")
    per_channel = absmax_quantize(w, "per-channel")
    rec_t = (per_tensor[0].float() * per_tensor[1])[normal]
    rec_c = (per_channel[0].float() * per_channel[1])[normal]
    assert sqnr_db(w[normal], rec_c) > 35 > 20 > sqnr_db(w[normal], rec_t)


def test_zero_row_does_not_divide_by_zero():
    w = torch.zeros(4, 8)
    w[1] = 1.0
    q, scale = absmax_quantize(w, "per-channel")
    assert torch.isfinite(scale).all() and torch.equal(q[0], torch.zeros(8, dtype=torch.int8))


def test_scopes_select_attention_or_ffn_and_never_the_head(tiny_base):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base.path)
    attention = select_linears(model, role="attention")
    ffn = select_linears(model, role="ffn")
    everything = select_linears(model, role="all")
    assert attention and all("attention" in n for n in attention)
    assert ffn and all(n.endswith(("intermediate.dense", "layer.0.output.dense", "layer.1.output.dense")) for n in ffn)
    assert not set(attention) & set(ffn) and set(attention) | set(ffn) < set(everything)
    assert "classifier" not in everything and "bert.pooler.dense" in everything


@pytest.mark.parametrize(
    "technique", ["custom-int8-tensor", "custom-int8-channel", "custom-int8-attn", "custom-int8-ffn"]
)
def test_artifact_stores_int8_and_stays_close(tiny_base, ctx, tiny_batch, technique):
    artifact = build_chain(tiny_base, parse_chain(technique), ctx, "tiny")
    predictor = load_predictor(artifact)
    buffers = dict(predictor.model.named_buffers())
    assert any(v.dtype == torch.int8 for k, v in buffers.items() if k.endswith("weight_int8"))
    ref = load_predictor(tiny_base)
    a = predictor.logits(predictor.prepare(tiny_batch))
    b = ref.logits(ref.prepare(tiny_batch))
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05


def test_stored_weights_take_about_a_quarter(tiny_base, ctx):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base.path)
    fp32_bytes = sum(m.weight.numel() * 4 for n, m in model.named_modules() if n in select_linears(model, role="all"))
    artifact = build_chain(tiny_base, parse_chain("custom-int8-channel"), ctx, "tiny")
    stored = load_predictor(artifact).model
    int8_bytes = sum(
        b.numel() * b.element_size() for n, b in stored.named_buffers() if n.endswith(("weight_int8", "scale"))
    )
    assert int8_bytes < 0.3 * fp32_bytes
    assert artifact.weight_bytes < tiny_base.weight_bytes  # despite the pickled module's fixed overhead


def test_in_place_application_reports_names(tiny_base):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base.path)
    names = apply_absmax_int8(model, AbsmaxInt8Config(scope="attention"))
    assert len(names) == 8  # 2 layers x (query, key, value, output)


def test_invalid_scope_lists_choices():
    with pytest.raises(ConfigError, match=r"scope='mlp'.*'all', 'attention', 'ffn'"):
        AbsmaxInt8Config(scope="mlp")


def test_the_classes_a_loader_unpickles_are_named_where_they_live_and_key_its_artifacts():
    """A saved pickle names its classes' modules: each path a loader declares in ``pickles`` must import as that
    very class (so a move of the class shows here), and it is part of the cache key of every technique that
    writes its kind (so a moved class rebuilds the artifact), with the versions of ``pickle_packages``."""
    import importlib

    from compressors.builders.techniques import TECHNIQUES
    from compressors.execution.runtime import ARTIFACT_LOADERS

    loaders = {kind: ARTIFACT_LOADERS.get(kind) for kind in ARTIFACT_LOADERS.names()}
    declared = {kind: loader.pickles for kind, loader in loaders.items() if loader.pickles}
    assert "torch-absmax-int8" in declared
    for kind, paths in declared.items():
        for path in paths:
            module, _, cls = path.rpartition(".")
            obj = getattr(importlib.import_module(module), cls)
            assert f"{obj.__module__}.{obj.__qualname__}" == path, (kind, path)
    parent = type("Parent", (), {"key": "p"})()
    for name in TECHNIQUES.names():
        technique = TECHNIQUES.get(name)
        loader = loaders.get(technique.artifact_kind)
        recipe = technique.cache_recipe(parent, data=toy_data(next(iter(technique.tasks))))
        assert recipe.get("pickles", []) == list(loader.pickles if loader else []), name
        if loader is not None and loader.pickled:
            assert set(loader.pickle_packages) <= set(recipe["versions"]), name


def test_a_moved_pickled_class_rebuilds_the_artifact_once_by_key(tiny_base, ctx, monkeypatch):
    """Moving Int8Linear to another module (and its loader's declaration with it) gives the absmax artifacts a
    new key: the next run builds one new artifact, whose pickle names the class where it now lives, and
    reuses it afterwards; the old entry, whose pickle names the old path, is never handed out for the new key."""
    import dataclasses
    import sys
    import types

    from compressors.execution import int8_linear
    from compressors.execution.runtime import ARTIFACT_LOADERS
    from tests.conftest import pickled_classes

    chain = parse_chain("custom-int8-channel")
    before = build_chain(tiny_base, chain, ctx, "tiny")
    old_path = "compressors.execution.int8_linear.Int8Linear"
    assert old_path in pickled_classes(before.file("model_absmax_int8.pt"))

    moved = types.ModuleType("moved_int8_linear")  # the class's new home
    moved.Int8Linear = type("Int8Linear", (int8_linear.Int8Linear,), {"__module__": moved.__name__})
    monkeypatch.setitem(sys.modules, moved.__name__, moved)
    monkeypatch.setattr(int8_linear, "Int8Linear", moved.Int8Linear)
    loader = ARTIFACT_LOADERS.get("torch-absmax-int8")
    monkeypatch.setitem(ARTIFACT_LOADERS._entries, "torch-absmax-int8",
                        dataclasses.replace(loader, pickles=("moved_int8_linear.Int8Linear",)))

    after = build_chain(tiny_base, chain, ctx, "tiny")
    assert after.key != before.key and after.path != before.path
    names = pickled_classes(after.file("model_absmax_int8.pt"))
    assert "moved_int8_linear.Int8Linear" in names and old_path not in names
    assert type(load_predictor(after).model.bert.encoder.layer[0].attention.self.query) is moved.Int8Linear
    again = build_chain(tiny_base, chain, ctx, "tiny")
    assert again.key == after.key and again.path == after.path and again.manifest == after.manifest  # once
