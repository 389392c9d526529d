"""The language-model techniques on tiny random causal LMs (Llama with tied embeddings like
SmolLM2, and GPT-2 with its Conv1D projections): each builds, keeps ``lm_head`` float, and
stays close to fp32 in perplexity."""

import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.execution.nn import conv1d_to_linear, head_module_names
from compressors.execution.runtime import load_predictor
from compressors.quality.metrics import perplexity


@pytest.fixture
def windows(tiny_lm_base):
    from transformers import AutoTokenizer

    from compressors.quality.data import TextCorpus
    from compressors.quality.metrics import make_token_windows
    from tests.conftest import LM_TEXT

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_base.path)
    return make_token_windows(tokenizer, TextCorpus("t", LM_TEXT, 1, "test", "x"), window=64)


def test_conv1d_becomes_an_equivalent_linear():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(12, 8)  # nf=12 outputs, nx=8 inputs
    torch.nn.init.normal_(conv.bias)
    holder = torch.nn.Sequential(conv)
    x = torch.randn(3, 8)
    expected = conv(x)
    assert conv1d_to_linear(holder) == ["0"]
    assert isinstance(holder[0], torch.nn.Linear) and holder[0].weight.shape == (12, 8)
    torch.testing.assert_close(holder[0](x), expected)


def test_lm_head_is_the_head_kept_float(tiny_lm_base):
    from compressors.execution.runtime import load_torch_module

    assert head_module_names(load_torch_module(tiny_lm_base)) == {"lm_head"}


# Relative perplexity change vs fp32 on a random 2-layer model (hidden 64), which amplifies weight
# error more than a trained model: int8 stays within 2%, 4-bit within 15%, bf16 within 1%.
@pytest.mark.parametrize("technique, tolerance", [
    ("dynamic-int8", 0.02),
    ("dynamic-int8-attn", 0.02),
    ("custom-int8-tensor", 0.02),
    ("custom-int8-channel", 0.02),
    ("custom-int8-attn", 0.02),
    ("custom-int8-ffn", 0.02),
    ("bf16", 0.01),
    ("bnb-int8", 0.02),
    ("bnb-nf4", 0.15),
])
def test_lm_technique_keeps_perplexity_and_lm_head(tiny_lm_base, windows, ctx, technique, tolerance):
    if technique.startswith("bnb"):
        pytest.importorskip("bitsandbytes")
    chain = parse_chain(technique)
    assert "causal-lm" in chain.tasks
    reference = perplexity(load_predictor(tiny_lm_base), windows)["perplexity"]
    artifact = build_chain(tiny_lm_base, chain, ctx, "tiny")
    predictor = load_predictor(artifact)
    result = perplexity(predictor, windows)["perplexity"]
    assert result == pytest.approx(reference, rel=tolerance)
    model = predictor.model
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.dtype in (torch.float32, torch.bfloat16)
    if technique == "dynamic-int8-attn":
        quantized = {n for n, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")
                     and type(m).__name__ == "Linear"}
        floats = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
        assert quantized and not any(".mlp." in n for n in quantized)
        assert floats - {"lm_head"} and all(".mlp." in n for n in floats - {"lm_head"})
    if technique.startswith("custom"):
        quantized = [n for n, m in model.named_modules() if type(m).__name__ == "Int8Linear"]
        assert quantized and "lm_head" not in quantized
        attention = [n for n in quantized if ".attn." in n or ".self_attn." in n]
        if technique == "custom-int8-attn":
            assert quantized == attention
        if technique == "custom-int8-ffn":
            assert not attention and all(".mlp." in n for n in quantized)
    out = predictor.generate(predictor.prepare({"input_ids": windows.windows[0][:, :5]}), 3)
    assert out.shape == (1, 8)


def test_keep_float_keeps_exactly_the_named_linears_float(tmp_path):
    """``keep_float`` patterns select by full module name: on a tiny Llama, ``*.mlp.down_proj``
    keeps every layer's down_proj (and the head) float and quantizes every other linear;
    ``model.layers.1.*`` keeps one whole decoder layer."""
    from transformers import LlamaForCausalLM

    from compressors.builders.techniques.bnb import BnbConfig, modules_kept_float
    from compressors.builders.techniques.quantization import DynamicInt8Config, apply_dynamic_int8
    from compressors.core.config import ConfigError
    from compressors.execution.nn import keep_float_names
    from tests.conftest import save_tiny_causal_lm

    folder = save_tiny_causal_lm(tmp_path / "llama")
    model = LlamaForCausalLM.from_pretrained(folder)
    down = {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}
    assert keep_float_names(model, ("*.mlp.down_proj",)) == down
    layer1 = keep_float_names(model, ("model.layers.1.*",))
    assert len(layer1) == 7 and all(n.startswith("model.layers.1.") for n in layer1)
    assert modules_kept_float(model, BnbConfig(keep_float=("*.mlp.down_proj",)))[0] == sorted(down | {"lm_head"})
    with pytest.raises(ConfigError):
        DynamicInt8Config(keep_float="*.mlp.down_proj")

    apply_dynamic_int8(model, DynamicInt8Config(keep_float=("*.mlp.down_proj",)))
    linears = {n: type(m) for n, m in model.named_modules() if type(m).__name__ == "Linear"}
    floats = {n for n, kind in linears.items() if kind is torch.nn.Linear}
    assert floats == down | {"lm_head"}
    assert len(linears) - len(floats) == 12  # q, k, v, o, gate, up of both layers: dynamically quantized
