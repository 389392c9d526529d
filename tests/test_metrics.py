import numpy as np
import pytest

from compressors.metrics import EvalSet, MeasurementError, accuracy, encode_sentences, measure_isolated
from compressors.runtime import load_predictor
from compressors.techniques import build_chain, parse_chain


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


def test_isolated_torch_measurement_matches_in_process_accuracy(tiny_base, tiny_eval_set):
    result = measure_isolated(tiny_base, tiny_eval_set)
    assert result["accuracy"] == pytest.approx(accuracy(load_predictor(tiny_base), tiny_eval_set))
    assert result["runtime_rss_bytes"] > 0 and result["memory_method"] == "rss-high-water-mark-after-imports"
    # a tiny model still costs something (weights, activations, loader), far less than the runtime itself
    assert 0 < result["peak_memory_bytes"] < result["runtime_rss_bytes"]
    assert result["placement"]["parameter_devices"] == ["cpu"]


def test_isolated_onnx_measurement_never_imports_torch(tiny_base, tiny_eval_set, ctx):
    artifact = build_chain(tiny_base, parse_chain("onnx-fp32"), ctx, "tiny")
    result = measure_isolated(artifact, tiny_eval_set)
    assert result["runtimes_loaded"] == ["onnxruntime"]
    assert result["placement"]["providers"] == ["CPUExecutionProvider"]
    assert result["accuracy"] == pytest.approx(accuracy(load_predictor(tiny_base), tiny_eval_set))


def test_corrupted_artifact_fails_measurement_with_reason(tiny_base, tiny_eval_set):
    (tiny_base.path / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(MeasurementError, match="not intact"):
        measure_isolated(tiny_base, tiny_eval_set)


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
    grown = measure_isolated(large, tiny_eval_set)["peak_memory_bytes"] - measure_isolated(small, tiny_eval_set)["peak_memory_bytes"]
    assert grown > 0.5 * extra_weights
