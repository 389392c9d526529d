import dataclasses

import pytest

from compressors.builders.techniques import ChainError, parse_chain


def test_single_technique():
    chain = parse_chain("dynamic-int8")
    assert [s.name for s in chain.build_stages] == ["dynamic-int8"]


def test_a_chain_runs_only_where_every_stage_can():
    # layer dropping runs anywhere; the quantized stage after it narrows the chain to its own device
    assert parse_chain("layerdrop-4+dynamic-int8").devices == {"cpu"}
    assert parse_chain("layerdrop-4+fp16").devices == {"cuda"}
    assert parse_chain("layerdrop-4").devices >= {"cpu", "cuda"}


def test_implied_stage_is_added_once():
    assert [s.name for s in parse_chain("onnx-int8").build_stages] == ["onnx-fp32", "onnx-int8"]
    assert [s.name for s in parse_chain("onnx-fp32+onnx-int8").build_stages] == ["onnx-fp32", "onnx-int8"]


def test_unknown_stage_lists_valid_techniques():
    with pytest.raises(ChainError) as info:
        parse_chain("fp32+int3")
    assert "'int3'" in str(info.value) and "dynamic-int8" in str(info.value)


@pytest.mark.parametrize("name, needs", [
    ("onnx-fp32+dynamic-int8", "needs a float PyTorch model"),
    ("dynamic-int8+onnx-fp32", "needs a float PyTorch model"),
    ("dynamic-int8+dynamic-int8", "needs a float PyTorch model"),
])
def test_stage_that_cannot_follow_fails_clearly(name, needs):
    with pytest.raises(ChainError, match=needs):
        parse_chain(name)


def test_chain_serialises_every_stage_config():
    recipe = parse_chain("onnx-int8").to_dict()
    assert recipe["stages"][1]["config"]["type"] == "OrtDynamicQuantConfig"


def test_importing_techniques_does_not_import_runtimes():
    # Collection and the ONNX memory probe rely on this: heavy imports stay inside functions.
    import subprocess
    import sys

    code = ("import sys, compressors.builders.techniques, compressors.builders.models; "
            "print(sorted(m for m in ('torch','onnxruntime','transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- knobs in a technique's name

REFINETUNE = {"batch_size": 32, "bucket_batches": 50, "epochs": 1, "lr": 8e-05, "max_length": 64, "n_sentences": 16000,
              "seed": 1, "warmup_ratio": 0.06, "weight_decay": 0.01}
L1 = {"type": "L1PruneConfig", "include_head": False, "kernel": "dense", "scope": "global"}
LOWRANK = {"type": "LowRankConfig", "only_if_smaller": True}
INT4 = {"type": "NncfWeightCompressionConfig", "mode": "INT4_SYM", "awq": True, "scale_estimation": True}


# What the cache keys hashed before these names became families (l1-P, lowrank-R[-ft], openvino-int4-wo):
# equal configs, so every artifact built before is still found.
@pytest.mark.parametrize("name, config", [
    ("l1-30", {**L1, "amount": 0.3}),
    ("l1-40", {**L1, "amount": 0.4}),
    ("l1-50", {**L1, "amount": 0.5}),
    ("l1-50-csr", {**L1, "amount": 0.5, "kernel": "csr"}),
    ("lowrank-50", {**LOWRANK, "keep": 0.5, "recipe": None}),
    ("lowrank-25", {**LOWRANK, "keep": 0.25, "recipe": None}),
    ("lowrank-50-ft", {**LOWRANK, "keep": 0.5, "recipe": REFINETUNE}),
    ("lowrank-25-ft", {**LOWRANK, "keep": 0.25, "recipe": REFINETUNE}),
    ("openvino-int4-wo", {**INT4, "group_size": 64, "ratio": 0.8}),
    ("openvino-int4-wo-r80-g64", {**INT4, "group_size": 64, "ratio": 0.8}),
])
def test_default_names_of_the_knob_families_keep_their_cache_recipes(name, config):
    from types import SimpleNamespace

    from compressors.builders.techniques import get_technique

    technique = get_technique(name)
    assert technique.config.to_dict() == config
    if not technique.uses_data:  # the re-finetuned and calibrated ones also key their train rows
        recipe = technique.cache_recipe(SimpleNamespace(key="parent"))
        assert recipe["technique"] == name and recipe["config"] == config


def test_default_matrices_list_the_knob_families_defaults_where_their_menus_were():
    from compressors.builders.techniques import default_techniques
    from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION

    def between(names, first, last):
        return names[names.index(first):names.index(last) + 1]

    cls = default_techniques(TASK_CLASSIFICATION)
    assert between(cls, "qlora", "onnx-fp32") == ["qlora", "lowrank-50", "lowrank-50-ft", "lowrank-25", "lowrank-25-ft",
                                                  "onnx-fp32"]
    assert between(cls, "openvino-int8", "dynamic-int8") == ["openvino-int8", "l1-30", "l1-40", "l1-50", "l1-50-csr",
                                                            "dynamic-int8"]
    # the other families' defaults still close the single techniques, before the default chains
    assert between(cls, "distill-l3", "layerdrop-2+dynamic-int8") == ["distill-l3", "layerdrop-2", "layerdrop-2-noft",
                                                                      "layerdrop-2+dynamic-int8"]
    assert len(cls) == len(set(cls))
    lm = default_techniques(TASK_CAUSAL_LM)
    assert between(lm, "openvino-fp32", "dynamic-int8") == ["openvino-fp32", "openvino-int8-wo", "openvino-int4-wo",
                                                            "dynamic-int8"]
    assert not [n for n in cls + lm if n.startswith("openvino-int4-wo-")]  # that family is for searches


@pytest.mark.parametrize("name, ratio, group", [("openvino-int4-wo-r0-g32", 0.0, 32),
                                                ("openvino-int4-wo-r55-g128", 0.55, 128),
                                                ("openvino-int4-wo-r100-g64", 1.0, 64)])
def test_openvino_int4_family_takes_share_and_group_from_its_name(name, ratio, group):
    from compressors.builders.techniques import get_technique

    technique = get_technique(name)
    stock = get_technique("openvino-int4-wo")
    assert technique.config == dataclasses.replace(stock.config, ratio=ratio, group_size=group)
    assert f"groups of {group} on {round(ratio * 100)}% of the linears" in technique.summary
    assert dataclasses.replace(technique, name=stock.name, config=stock.config, summary=stock.summary) == stock
    assert [s.name for s in parse_chain(name).build_stages] == ["openvino-fp32", name]


@pytest.mark.parametrize("name, message", [
    ("openvino-int4-wo-r101-g64", "int4 share percent 101 is not an integer from 0 to 100; "
                                  "valid: openvino-int4-wo-r0-g64 to openvino-int4-wo-r100-g64"),
    ("openvino-int4-wo-r80-g16", "int4 group size 16 is not offered; valid groups: g32, g64, g128"),
    ("openvino-int4-wo-r80-g-1", "int4 group size -1 is not offered; valid groups: g32, g64, g128 (per-channel"),
    ("openvino-int4-wo-r80-g064", "int4 group size 064 is not offered"),
])
def test_openvino_int4_family_rejects_bad_knobs_naming_them(name, message):
    with pytest.raises(ChainError) as info:
        parse_chain(name)
    assert message in str(info.value) and repr(name) in str(info.value)


def test_a_family_whose_example_or_defaults_do_not_parse_fails_at_registration():
    from compressors.builders.techniques import TECHNIQUES, get_technique
    from compressors.builders.techniques.base import register_technique_family

    def only_seven(match):
        if match.group(1) != "7":
            raise ChainError(f"{match.group(0)} is out of range")
        return get_technique("fp32")

    with pytest.raises(ChainError, match="knob-8 is out of range"):
        register_technique_family(r"knob-(\d+)", "knob-8", only_seven)
    with pytest.raises(ChainError, match="knob-9 is out of range"):
        register_technique_family(r"knob-(\d+)", "knob-7", only_seven, defaults=("knob-9",))
    with pytest.raises(ChainError, match="its default 'other-1' does not match it"):
        register_technique_family(r"knob-(\d+)", "knob-7", only_seven, defaults=("other-1",))
    assert "knob-7" not in TECHNIQUES
