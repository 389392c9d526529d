import dataclasses
import json

import numpy as np
import pytest

from compressors.builders.techniques import Chain, build_chain, get_technique, parse_chain
from compressors.builders.techniques.layerdrop import (
    SENSITIVITY_FILE,
    LayerDropConfig,
    layer_sensitivity,
    least_sensitive,
)
from compressors.builders.training import FineTuneRecipe
from compressors.execution.nn import drop_layers, layer_count
from compressors.execution.runtime import load_predictor, load_torch_module
from compressors.quality.data import TextClassificationSplit
from tests.conftest import SENTENCES, save_tiny_bert_classifier

LABELS = (1, 1, 1, 0, 0, 1, 0, 1)


def toy_train(copies: int = 8) -> TextClassificationSplit:
    return TextClassificationSplit("train", tuple(SENTENCES) * copies, LABELS * copies, "toy", "toy-checksum")


@pytest.fixture
def four_layer_base(tmp_path, cache):
    import shutil

    source = save_tiny_bert_classifier(tmp_path / "tiny4-src", layers=4)

    def build(out):
        for item in source.iterdir():
            shutil.copy2(item, out / item.name)

    return cache.get_or_build(artifact_kind="hf-torch", name="tiny4", recipe={"tiny": 4}, build=build,
                              weights=["model.safetensors"])


def test_dropping_layers_gives_a_loadable_smaller_model(four_layer_base, tmp_path, tiny_batch):
    from transformers import AutoModelForSequenceClassification

    model = load_torch_module(four_layer_base)
    kept_weight = model.bert.encoder.layer[2].output.dense.weight.detach().clone()
    drop_layers(model, [0, 1])
    assert layer_count(model) == 2 and model.config.num_hidden_layers == 2
    model.save_pretrained(tmp_path / "dropped")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "dropped")
    assert len(reloaded.bert.encoder.layer) == 2
    np.testing.assert_array_equal(reloaded.bert.encoder.layer[0].output.dense.weight.detach(), kept_weight)


def test_drop_layers_rejects_removing_everything(tiny_base):
    model = load_torch_module(tiny_base)
    with pytest.raises(ValueError, match="at least one must stay"):
        drop_layers(model, [0, 1])


def test_distilbert_layers_are_found(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=30, dim=32, n_layers=3, n_heads=2, hidden_dim=64)
    )
    drop_layers(model, [1])
    assert len(model.distilbert.transformer.layer) == 2 and model.config.n_layers == 2


def test_sensitivity_curve_and_least_sensitive_choice(tiny_base):
    from transformers import AutoTokenizer

    model = load_torch_module(tiny_base)
    curve = layer_sensitivity(model, AutoTokenizer.from_pretrained(tiny_base.path), toy_train(1))
    assert [e["layer"] for e in curve["layers"]] == [0, 1]
    assert layer_count(model) == 2  # the model itself is untouched
    for entry in curve["layers"]:
        assert entry["drop_pp"] == pytest.approx(curve["baseline_accuracy_pct"] - entry["accuracy_pct"], abs=1e-3)
    fake = {
        "layers": [
            {"layer": 0, "drop_pp": 3.0},
            {"layer": 1, "drop_pp": 0.5},
            {"layer": 2, "drop_pp": 0.5},
            {"layer": 3, "drop_pp": -1.0},
        ]
    }
    assert least_sensitive(fake, 2) == [2, 3]


def test_layerdrop_chain_builds_each_stage_in_order_and_caches_it(four_layer_base, ctx, tiny_batch, monkeypatch):
    from tests.conftest import toy_data

    ctx = dataclasses.replace(ctx, data=toy_data(copies=20))  # the sensitivity curve and the re-finetune
    stage = dataclasses.replace(
        get_technique("layerdrop-2"),
        config=LayerDropConfig(
            drop=2, held_apart=16, recipe=FineTuneRecipe(n_sentences=32, batch_size=8, max_length=16)
        ),
    )
    int8 = get_technique("dynamic-int8")
    chain = Chain("layerdrop-2+dynamic-int8", (stage, int8), (stage, int8))
    built = []
    original = ctx.cache.get_or_build

    def recording(**kwargs):
        artifact = original(**kwargs)
        built.append(kwargs["artifact_kind"])
        return artifact

    monkeypatch.setattr(ctx.cache, "get_or_build", recording)
    artifact = build_chain(four_layer_base, chain, ctx, "tiny4")
    assert built == ["sensitivity", "hf-torch", "torch-dynamic-int8"]

    dropped = ctx.cache.get_or_build(**{**_last_call(chain, four_layer_base, ctx), "build": _never})
    assert dropped.meta["layers_after"] == 2 and dropped.meta["training"]["sentences"] == 32
    curve = json.loads((ctx.cache.root / "sensitivity").glob("*/" + SENSITIVITY_FILE).__next__().read_text())
    assert sorted(dropped.meta["dropped_layers"]) == least_sensitive(curve, 2)

    built.clear()
    again = build_chain(four_layer_base, chain, ctx, "tiny4")  # every stage now comes from the cache
    assert again.key == artifact.key
    predictor = load_predictor(again)
    assert len(predictor.model.bert.encoder.layer) == 2
    assert np.isfinite(predictor.logits(predictor.prepare(tiny_batch))).all()


def _never(out):
    raise AssertionError("stage rebuilt although it is cached")


def _last_call(chain, base, ctx):
    stage = chain.build_stages[0]
    return {
        "artifact_kind": stage.artifact_kind,
        "name": f"tiny4-{stage.name}",
        "recipe": stage.cache_recipe(base, data=ctx.data),
        "weights": list(stage.weights),
    }


def test_family_parses_k_and_noft():
    assert get_technique("layerdrop-3").config.drop == 3
    assert get_technique("layerdrop-2-noft").config.refinetune is False
    assert parse_chain("layerdrop-2+onnx-int8").build_stages[-2].name == "onnx-fp32"
