"""Float fallback (``<recipe>-fbN``): names, the cached leave-one-in sensitivity, which layers stay float."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from compressors.builders.techniques import Chain, ChainError, build_chain, default_techniques, get_technique
from compressors.builders.techniques import fallback as fb
from compressors.builders.techniques.fallback import SENSITIVITY_FILE, FloatFallbackConfig, most_sensitive
from compressors.core.task_kinds import TASKS
from compressors.execution.runtime import load_predictor
from compressors.quality.data import TextCorpus
from compressors.quality.taskdata import InMemoryData, UndeclaredDataUse
from tests.conftest import LM_TEXT, save_tiny_bert_classifier, save_tiny_causal_lm
from tests.techniques.test_layerdrop import toy_train

RECIPES = {"dynamic-int8": "DynamicInt8Config", "onnx-int8-static": "OrtStaticQuantConfig",
           "openvino-int8": "NncfQuantizeConfig", "torchao-int8-dyn": "TorchaoConfig"}


def test_names_parse_and_existing_names_keep_their_recipes():
    for recipe, config_type in RECIPES.items():
        technique = get_technique(f"{recipe}-fb3")
        assert isinstance(technique.config, FloatFallbackConfig) and technique.config.fallback == 3
        assert type(technique.config.quantizer).__name__ == config_type and technique.uses_data
        assert type(get_technique(recipe).config).__name__ == config_type  # the recipe itself is unchanged
    assert get_technique("dynamic-int8-attn").config.keep_float == ("*.mlp.*",)
    assert get_technique("torchao-int8-dyn-fb1").tasks == {"causal-lm"}
    assert get_technique("openvino-int8-fb0").implies == ("openvino-fp32",)
    for bad in ("dynamic-int8-fb01", "dynamic-int8-fb", "bnb-nf4-fb1", "dynamic-int8-attn-fb1"):
        with pytest.raises(Exception, match="unknown technique"):
            get_technique(bad)
    assert not any("-fb" in name for task in TASKS for name in default_techniques(task))


def test_a_bad_n_names_the_valid_range():
    assert get_technique("onnx-int8-static-fb12").layers_after(12) == 12  # layers are kept, not removed
    with pytest.raises(ChainError, match="valid: onnx-int8-static-fb0 to onnx-int8-static-fb12"):
        get_technique("onnx-int8-static-fb13").layers_after(12)
    with pytest.raises(ChainError, match="tiny on m: .*valid: dynamic-int8-fb0 to dynamic-int8-fb4"):
        Chain("tiny", (get_technique("dynamic-int8-fb5"),), (get_technique("dynamic-int8-fb5"),)).check_layers(4, "m")


def test_the_float_layers_field_leaves_todays_cache_keys_alone():
    from compressors.builders.techniques.quantization import DynamicInt8Config

    assert "float_layers" not in DynamicInt8Config().to_dict()
    assert DynamicInt8Config(float_layers=(1,)).to_dict()["float_layers"] == (1,)
    for recipe in RECIPES:
        assert "float_layers" not in get_technique(recipe).config.to_dict()
    assert get_technique("dynamic-int8-fb2").config.to_dict()["quantizer"]["type"] == "DynamicInt8Config"


def test_ranking_takes_the_highest_scores_lower_index_first_on_ties():
    assert most_sensitive([0.1, 0.5, 0.5, 0.2], 2) == [1, 2]
    assert most_sensitive([0.3, 0.1, 0.3, 0.3], 2) == [0, 2]
    assert most_sensitive([0.3, 0.1], 0) == []


def test_layer_prefixes_of_each_architecture(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from compressors.execution.nn import folder_layer_prefixes, layer_keep_float, layer_prefixes

    bert = AutoModelForSequenceClassification.from_pretrained(save_tiny_bert_classifier(tmp_path / "b", layers=3))
    assert layer_prefixes(bert) == [f"bert.encoder.layer.{i}" for i in range(3)]
    assert layer_keep_float(bert, [2, 0]) == ("bert.encoder.layer.0.*", "bert.encoder.layer.2.*")
    with pytest.raises(ValueError, match="3 transformer layers"):
        layer_keep_float(bert, [3])
    llama = save_tiny_causal_lm(tmp_path / "llama")
    assert layer_prefixes(AutoModelForCausalLM.from_pretrained(llama)) == ["model.layers.0", "model.layers.1"]
    assert folder_layer_prefixes(llama) == ["model.layers.0", "model.layers.1"]
    assert layer_prefixes(AutoModelForCausalLM.from_pretrained(save_tiny_causal_lm(tmp_path / "g", "gpt2"))) == [
        "transformer.h.0", "transformer.h.1"]


class Watched(InMemoryData):
    """Rows whose every read is recorded."""

    reads: list

    def train(self):
        self.reads.append("train")
        return super().train()

    def eval(self):
        self.reads.append("eval")
        return super().eval()


def _watched(train_rows, eval_rows) -> Watched:
    data = Watched(eval_rows=eval_rows, train_rows=train_rows, name="toy")
    object.__setattr__(data, "reads", [])
    return data


@pytest.fixture
def four_layers(tmp_path, cache):
    import shutil

    source = save_tiny_bert_classifier(tmp_path / "tiny4-src", layers=4)
    return cache.get_or_build(artifact_kind="hf-torch", name="tiny4", recipe={"tiny": 4},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])


def _chain(name: str, **config) -> Chain:
    stage = get_technique(name)
    stage = dataclasses.replace(stage, config=dataclasses.replace(stage.config, **config))
    implied = tuple(get_technique(n) for n in stage.implies)
    return Chain(name, (stage,), (*implied, stage))


def _float_linears(model) -> set[str]:
    return {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}


def test_dynamic_int8_fb1_keeps_the_most_sensitive_layer_float(four_layers, ctx, monkeypatch):
    data = _watched(toy_train(80), toy_train(1))  # 640 train rows: a held-apart slice of 64
    ctx = dataclasses.replace(ctx, data=data)
    artifact = build_chain(four_layers, _chain("dynamic-int8-fb1", sentences=64), ctx, "tiny4")

    curve = json.loads(next((ctx.cache.root / "sensitivity").glob("*/" + SENSITIVITY_FILE)).read_text())
    scores = [entry["score"] for entry in curve["layers"]]
    assert len(scores) == 4 and all(s >= 0 for s in scores) and len(set(scores)) == 4
    top = int(np.argmax(scores))
    assert artifact.meta["float_layers"] == [top] and artifact.meta["layer_scores"] == scores
    assert artifact.meta["sensitivity_ranking"][0] == top == curve["ranking"][0]
    assert curve["data"]["sentences"] == 64 and curve["metric"] == "kl_fp32_to_quantized"
    model = load_predictor(artifact).model
    assert _float_linears(model) == {"classifier"} | {n for n in _float_linears(model)
                                                      if n.startswith(f"bert.encoder.layer.{top}.")}
    assert len(_float_linears(model)) == 1 + 6  # the head, and layer top's q, k, v, o, intermediate, output
    assert sorted(artifact.meta["float_linear_modules"]) == sorted(_float_linears(model))
    assert "eval" not in data.reads  # the sensitivity is scored on held-apart train rows only

    # a second N reads the cached ranking: no leave-one-in build, no scoring
    monkeypatch.setattr(fb, "score", lambda *a: pytest.fail("sensitivity recomputed although it is cached"))
    second = build_chain(four_layers, _chain("dynamic-int8-fb2", sentences=64), ctx, "tiny4")
    assert second.meta["sensitivity_artifact"] == artifact.meta["sensitivity_artifact"]
    assert second.meta["float_layers"] == most_sensitive(scores, 2)
    assert len(list((ctx.cache.root / "sensitivity").glob("*/" + SENSITIVITY_FILE))) == 1


def test_the_sensitivity_reads_train_rows_only_through_the_stage_guard(four_layers, ctx):
    data = _watched(toy_train(40), toy_train(1))
    technique = get_technique("dynamic-int8-fb1")
    stage_ctx = dataclasses.replace(ctx, data=data.for_stage(technique.name, technique.uses_data))
    with pytest.raises(UndeclaredDataUse, match="evaluation rows"):
        stage_ctx.require_data().eval()  # what a technique reading evaluation rows meets
    undeclared = dataclasses.replace(ctx, data=data.for_stage(technique.name, False))
    with pytest.raises(UndeclaredDataUse, match="without declaring"):
        fb.sensitivity_artifact(four_layers, dataclasses.replace(technique.config, sentences=8), undeclared)
    assert data.reads == []


def test_fallback_n_above_the_layer_count_fails_at_build(four_layers, ctx):
    from tests.conftest import toy_data

    with pytest.raises(ChainError, match="valid: dynamic-int8-fb0 to dynamic-int8-fb4"):
        build_chain(four_layers, _chain("dynamic-int8-fb5"), dataclasses.replace(ctx, data=toy_data(copies=20)), "t")


# ------------------------------------------------------------------------------------------- causal LMs

def _long_text() -> TextCorpus:
    """Enough characters (one token each) for the calibration windows and the sensitivity's to both fit."""
    return TextCorpus("valid", LM_TEXT * 60, 1, "toy", "toy-long-checksum")


def test_lm_sensitivity_windows_stay_clear_of_the_calibration_windows():
    from compressors.builders.techniques.openvino import lm_calibration_spans
    from compressors.quality.data import DataError

    spans = fb.lm_sensitivity_spans(40_000, 4, 256)
    assert len(spans) == 4 and all(b - a == 256 for a, b in spans)
    for a, b in spans:
        assert all(b <= c or a >= d for c, d in lm_calibration_spans(40_000))
    with pytest.raises(DataError, match="clear of"):
        fb.lm_sensitivity_spans(1_000, 4, 256)


@pytest.mark.parametrize("recipe", ["dynamic-int8", "torchao-int8-dyn"])
def test_lm_fallback_keeps_the_most_sensitive_decoder_layer_float(recipe, tmp_path, cache, ctx):
    import shutil

    pytest.importorskip("torchao") if recipe.startswith("torchao") else None
    source = save_tiny_causal_lm(tmp_path / "llama")
    base = cache.get_or_build(artifact_kind="hf-torch", name="llama", recipe={"tiny": "llama"},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])
    data = _watched(_long_text(), _long_text())
    ctx = dataclasses.replace(ctx, data=data)
    artifact = build_chain(base, _chain(f"{recipe}-fb1", windows=2, window_tokens=64), ctx, "llama")
    scores = artifact.meta["layer_scores"]
    assert len(scores) == 2 and artifact.meta["sensitivity_metric"] == "nll_rise"
    top = most_sensitive(scores, 1)[0]
    assert artifact.meta["float_layers"] == [top]
    kept = set(artifact.meta["float_linear_modules"])
    assert kept == {"lm_head"} | {f"model.layers.{top}.{p}" for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")}
    assert "eval" not in data.reads
    with pytest.raises(ChainError, match="valid: dynamic-int8-fb0 to dynamic-int8-fb2"):
        build_chain(base, _chain("dynamic-int8-fb3"), ctx, "llama")


# ------------------------------------------------------------------------------------------- exported graphs

def _exported(base, ctx, name: str):
    return build_chain(base, Chain(name, (get_technique(name),), (get_technique(name),)), ctx, "tiny4")


@pytest.mark.slow
def test_onnx_exclusion_lists_name_each_layers_matmuls(four_layers, ctx):
    import onnx

    from compressors.builders.techniques.onnx import OrtStaticQuantConfig

    pytest.importorskip("onnxruntime")
    ctx = dataclasses.replace(ctx, data=_watched(toy_train(40), toy_train(1)))
    graph = _exported(four_layers, ctx, "onnx-fp32")
    artifact = build_chain(four_layers, _chain("onnx-int8-static-fb1", sentences=32,
                                               quantizer=OrtStaticQuantConfig(calibration_sentences=16)), ctx, "tiny4")
    top = artifact.meta["float_layers"][0]
    assert len(artifact.meta["layer_scores"]) == 4
    nodes = artifact.meta["float_layer_nodes"][str(top)]
    weights = {i.name for i in onnx.load(str(graph.file("model.onnx"))).graph.initializer}
    exported = {n.name: n for n in onnx.load(str(graph.file("model.onnx"))).graph.node}
    weight_matmuls = [n for n in nodes if exported[n].op_type == "MatMul" and exported[n].input[1] in weights]
    assert len(weight_matmuls) == 6  # q, k, v, attention output, intermediate, output
    quantized = onnx.load(str(artifact.file("model.onnx"))).graph
    dequantized = {o for n in quantized.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in quantized.node:
        if node.name in weight_matmuls:
            assert not set(node.input) & dequantized, f"{node.name} of float layer {top} reads int8"
    others = [n for n in quantized.node if n.op_type == "MatMul" and n.name not in nodes
              and set(n.input) & dequantized]
    assert len(others) == 3 * 6  # the other layers' weight MatMuls are quantized

    with pytest.raises(ValueError, match="the graph's model has 4 transformer layers"):
        from compressors.builders.techniques.onnx import layer_nodes

        layer_nodes(graph, graph.file("model.onnx"), (4,), ("MatMul",))


@pytest.mark.slow
def test_openvino_ignored_scope_names_each_layers_operations(four_layers, ctx):
    pytest.importorskip("nncf")
    import openvino as ov

    from compressors.builders.techniques.openvino import NncfQuantizeConfig, layer_operations

    ctx = dataclasses.replace(ctx, data=_watched(toy_train(40), toy_train(1)))
    ir = _exported(four_layers, ctx, "openvino-fp32")
    model = ov.Core().read_model(str(ir.file("openvino_model.xml")))
    operations = layer_operations(ir, model, (0, 3))
    assert all(sum(".attention.self.query/" in n for n in names) == 1 for names in operations.values())
    assert all(f"layer.{i}." in n for i, names in operations.items() for n in names)

    artifact = build_chain(four_layers, _chain("openvino-int8-fb1", sentences=32,
                                               quantizer=NncfQuantizeConfig(calibration_sentences=16)), ctx, "tiny4")
    top = artifact.meta["float_layers"][0]
    quantized = ov.Core().read_model(str(artifact.file("openvino_model.xml")))
    fake_quantized = {op.get_friendly_name() for op in quantized.get_ops() if op.get_type_name() == "MatMul"
                      and op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"}
    assert not any(f"layer.{top}." in name for name in fake_quantized)
    assert any(f"layer.{(top + 1) % 4}." in name for name in fake_quantized)


def test_classifier_scoring_is_kl_of_the_logits():
    rows = fb.ScoringRows(False, (), {})
    same = [np.array([[1.0, -1.0], [0.5, 0.5]])]
    assert fb.score(same, same, rows) == pytest.approx(0.0)
    p, q = np.array([[0.0, 0.0]]), np.array([[np.log(3.0), 0.0]])  # (1/2, 1/2) vs (3/4, 1/4)
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert fb.score([p], [q], rows) == pytest.approx(expected)


def test_a_fallback_is_held_to_its_recipes_quality_limits_and_fp32s_memory():
    from bench.budgets import BudgetError, budget_for, load_budgets

    budgets = load_budgets()
    for recipe in ("dynamic-int8", "onnx-int8-static", "openvino-int8"):
        derived, own, fp32 = (budget_for(budgets, t, "minilm-sst2") for t in (f"{recipe}-fb2", recipe, "fp32"))
        assert derived.technique == f"{recipe}-fb2"
        assert derived.max_accuracy_drop_pp == own.max_accuracy_drop_pp
        assert derived.max_peak_memory_mb == fp32.max_peak_memory_mb and "fp32" in derived.memory_basis
    with pytest.raises(BudgetError, match="no budget"):
        budget_for(budgets, "layerdrop-3", "minilm-sst2")  # no budget_from: still an error, not a free pass
