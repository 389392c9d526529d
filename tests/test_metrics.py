import numpy as np
import pytest

from compressors.builders.techniques import build_chain, parse_chain
from compressors.evaluation.isolated import measure_isolated
from compressors.execution.runtime import load_predictor
from compressors.quality.metrics import EvalSet, MeasurementError, accuracy, encode_sentences


@pytest.fixture
def tiny_eval_set(tiny_base):
    from transformers import AutoTokenizer

    from tests.conftest import SENTENCES

    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path)
    batches = encode_sentences(tokenizer, SENTENCES, batch_size=3)
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    return EvalSet(tuple(batches), labels, "tiny")


def test_eval_set_round_trips(tmp_path, tiny_eval_set):
    tiny_eval_set.save(tmp_path / "e.npz")
    loaded = EvalSet.load(tmp_path / "e.npz")
    assert len(loaded.batches) == 3 and loaded.checksum == "tiny"
    for a, b in zip(loaded.batches, tiny_eval_set.batches, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batches_are_padded_per_batch(tiny_eval_set):
    assert {b["input_ids"].dtype for b in tiny_eval_set.batches} == {np.dtype("int64")}
    assert sum(b["input_ids"].shape[0] for b in tiny_eval_set.batches) == 8


@pytest.mark.slow
def test_isolated_torch_measurement_matches_in_process_accuracy(tiny_base, tiny_eval_set):
    result = measure_isolated(tiny_base, tiny_eval_set)
    assert result["accuracy"] == pytest.approx(accuracy(load_predictor(tiny_base), tiny_eval_set))
    assert result["runtime_rss_bytes"] > 0 and result["memory_method"] == "rss-high-water-mark-after-imports"
    # a tiny model still costs something (weights, activations, loader), far less than the runtime itself
    assert 0 < result["peak_memory_bytes"] < result["runtime_rss_bytes"]
    assert result["placement"]["parameter_devices"] == ["cpu"]


@pytest.mark.slow
def test_isolated_onnx_measurement_never_imports_torch(tiny_base, tiny_eval_set, ctx):
    artifact = build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny")
    result = measure_isolated(artifact, tiny_eval_set)
    assert result["runtimes_loaded"] == ["onnxruntime"]
    assert result["placement"]["providers"] == ["CPUExecutionProvider"]
    assert result["accuracy"] == pytest.approx(accuracy(load_predictor(tiny_base), tiny_eval_set))


@pytest.mark.slow
def test_corrupted_artifact_fails_measurement_with_reason(tiny_base, tiny_eval_set):
    (tiny_base.path / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(MeasurementError, match="not intact"):
        measure_isolated(tiny_base, tiny_eval_set)


@pytest.mark.slow
def test_memory_grows_with_model_size(tmp_path, cache, tiny_eval_set):
    """A model with ~7 MB more weights must show at least half of that more peak memory."""
    import shutil

    from tests.conftest import save_tiny_bert_classifier

    def base(layers):
        src = save_tiny_bert_classifier(tmp_path / f"src{layers}", layers=layers)
        return cache.get_or_build(artifact_kind="hf-torch", name=f"t{layers}", recipe={"layers": layers},
                                  build=lambda out: [shutil.copy2(p, out / p.name) for p in src.iterdir()] and None,
                                  weights=["model.safetensors"])

    small, large = base(1), base(200)
    extra_weights = large.weight_bytes - small.weight_bytes
    assert extra_weights > 6e6
    grown = (
        measure_isolated(large, tiny_eval_set)["peak_memory_bytes"]
        - measure_isolated(small, tiny_eval_set)["peak_memory_bytes"]
    )
    assert grown > 0.5 * extra_weights


# ----------------------------------------------------------------------------- perplexity


def _windows(tokenizer, text, window, max_tokens=None):
    from compressors.quality.data import TextCorpus
    from compressors.quality.metrics import make_token_windows

    return make_token_windows(tokenizer, TextCorpus("t", text, 1, "test", "x"), window=window, max_tokens=max_tokens)


def test_windows_cut_the_token_stream_without_overlap():
    ids = list(range(100, 123))  # 23 tokens

    class Tokenizer:
        def __call__(self, text, add_special_tokens, verbose):
            assert text == "abc" and add_special_tokens is False
            return {"input_ids": ids}

    windows = _windows(Tokenizer(), "abc", window=5)
    assert [w.tolist() for w in windows.windows] == [[ids[i : i + 5]] for i in range(0, 20, 5)] + [[ids[20:23]]]
    assert windows.n_tokens == 23 and windows.n_predicted == 4 * 4 + 2 and windows.corpus_tokens == 23
    budget = _windows(Tokenizer(), "abc", window=5, max_tokens=11)  # 5 + 5 + a last window of 1 token: dropped
    assert [w.shape[1] for w in budget.windows] == [5, 5] and budget.corpus_tokens == 23
    assert budget.checksum != windows.checksum
    with pytest.raises(ValueError, match="window 1"):
        _windows(Tokenizer(), "abc", window=1)


@pytest.mark.slow
def test_perplexity_matches_the_models_own_loss(tiny_lm_base, tmp_path):
    """Independent computation: Hugging Face's built-in causal-LM loss (labels = inputs), one
    window at a time, weighted by the tokens each predicts."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compressors.quality.metrics import TokenWindows, perplexity
    from tests.conftest import LM_TEXT

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_base.path)
    windows = _windows(tokenizer, LM_TEXT, window=48)
    assert len(windows.windows) >= 3 and windows.windows[-1].shape[1] < 48  # a shorter last window too
    ours = perplexity(load_predictor(tiny_lm_base), windows)

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_base.path).eval()
    total = count = 0
    with torch.no_grad():
        for window in windows.windows:
            ids = torch.from_numpy(window)
            total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    assert ours["predicted_tokens"] == count
    assert ours["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)
    assert 1.0 < ours["perplexity"] < 10 * len(tokenizer)  # a random model: near uniform, not degenerate

    windows.save(tmp_path / "w.npz")  # what the isolated process reads
    loaded = TokenWindows.load(tmp_path / "w.npz")
    assert loaded.checksum == windows.checksum and all(
        np.array_equal(a, b) for a, b in zip(loaded.windows, windows.windows, strict=True)
    )
    isolated = measure_isolated(tiny_lm_base, loaded)
    assert isolated["perplexity"] == pytest.approx(ours["perplexity"], rel=1e-5)
    assert isolated["peak_memory_bytes"] > 0 and "accuracy" not in isolated


def test_nan_logits_are_an_error_not_a_perplexity():
    from compressors.quality.metrics import perplexity

    class Broken:
        def prepare(self, encoded):
            return encoded

        def logits(self, prepared):
            out = np.zeros((1, prepared["input_ids"].shape[1], 8), dtype=np.float32)
            out[0, 2, 3] = np.inf
            return out

    windows = _windows(type("T", (), {"__call__": lambda self, *a, **k: {"input_ids": [1, 2, 3, 4, 5]}})(), "x", 5)
    with pytest.raises(MeasurementError, match="not finite"):
        perplexity(Broken(), windows)
