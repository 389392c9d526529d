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
