import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.builders.techniques.pruning import (
    L1PruneConfig,
    _encode_sparse,
    apply_l1_pruning,
    save_sparse,
    sparsity,
)
from compressors.core.config import ConfigError
from compressors.execution.loaders.sparse import SPARSE_WEIGHTS, decode_sparse, load_sparse
from compressors.execution.runtime import load_predictor, load_torch_module


@pytest.mark.parametrize("scope", ["global", "per-layer"])
@pytest.mark.parametrize("amount", [0.3, 0.5])
def test_pruning_reaches_sparsity_and_leaves_no_masks(tiny_base, amount, scope):
    model = load_torch_module(tiny_base)
    names = apply_l1_pruning(model, L1PruneConfig(amount=amount, scope=scope))
    assert len(names) == 2 * 6  # 6 linears per BERT layer; not the pooler, not the classifier
    assert sparsity(model, names) == pytest.approx(amount, abs=0.01)
    if scope == "per-layer":
        assert all(sparsity(model, [n]) == pytest.approx(amount, abs=0.01) for n in names)
    assert not (model.bert.pooler.dense.weight == 0).any()
    assert not [n for n, _ in model.named_buffers() if "mask" in n]
    assert not [n for n, _ in model.named_parameters() if n.endswith("_orig")]
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert not (model.classifier.weight == 0).any()


def test_head_is_pruned_only_when_asked(tiny_base):
    model = load_torch_module(tiny_base)
    names = apply_l1_pruning(model, L1PruneConfig(amount=0.5, include_head=True))
    assert {"classifier", "bert.pooler.dense"} <= set(names)


@pytest.mark.parametrize("density", [0.5, 0.01])
def test_sparse_encodings_round_trip_and_pick_the_smaller(density):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32) * (rng.random((64, 48)) < density)
    encoding, parts = _encode_sparse(weight)
    assert encoding == ("bitmask" if density == 0.5 else "csr")
    np.testing.assert_array_equal(decode_sparse(encoding, list(weight.shape), parts), weight)


def test_sparse_file_round_trips_state_dict(tmp_path):
    state = {"a.weight": torch.tensor([[0.0, 1.5], [0.0, 0.0]]), "b": torch.arange(3.0)}
    save_sparse(state, {"a.weight"}, tmp_path / "s.safetensors")
    loaded = load_sparse(tmp_path / "s.safetensors")
    assert set(loaded) == set(state)
    for name in state:
        torch.testing.assert_close(loaded[name], state[name])


def test_l1_artifact_is_sparse_sized_and_loads_the_pruned_model(tiny_base, ctx, tiny_batch):
    artifact = build_chain(tiny_base, parse_chain("l1-50"), ctx, "tiny")
    meta = artifact.meta
    assert meta["sparsity_of_pruned_linears"] == pytest.approx(0.5, abs=0.01)
    assert artifact.manifest["weights"] == [SPARSE_WEIGHTS]
    assert meta["sparse_size_bytes"] == artifact.weight_bytes < meta["dense_size_bytes"]
    assert "none" in meta["sparse_kernel"]

    expected = load_torch_module(tiny_base)
    apply_l1_pruning(expected, L1PruneConfig(amount=0.5))
    predictor = load_predictor(artifact)
    prepared = predictor.prepare(tiny_batch)
    with torch.inference_mode():
        np.testing.assert_allclose(
            predictor.logits(prepared), expected(**prepared).logits.numpy(), rtol=1e-5, atol=1e-6
        )


def test_pruned_model_chains_into_dynamic_int8(tiny_base, ctx, tiny_batch):
    chain = parse_chain("l1-50+dynamic-int8")
    artifact = build_chain(tiny_base, chain, ctx, "tiny")
    assert artifact.kind == "torch-dynamic-int8"
    predictor = load_predictor(artifact)
    assert np.isfinite(predictor.logits(predictor.prepare(tiny_batch))).all()


def test_invalid_amount_is_named():
    with pytest.raises(ConfigError, match="amount=1.5"):
        L1PruneConfig(amount=1.5)


def test_csr_variant_runs_sparse_kernel_with_same_logits(tiny_base, ctx, tiny_batch):
    dense = load_predictor(build_chain(tiny_base, parse_chain("l1-50"), ctx, "tiny"))
    artifact = build_chain(tiny_base, parse_chain("l1-50-csr"), ctx, "tiny")
    csr = load_predictor(artifact)
    query = csr.model.bert.encoder.layer[0].attention.self.query
    assert type(query).__name__ == "CsrLinear" and query.weight.layout == torch.sparse_csr
    assert csr.placement()["csr_linear_modules"] == 2 * 6
    assert "torch.sparse.mm" in artifact.meta["sparse_kernel"]
    np.testing.assert_allclose(
        csr.logits(csr.prepare(tiny_batch)), dense.logits(dense.prepare(tiny_batch)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("percent", [5, 30, 37, 50, 95])
def test_l1_family_prunes_the_share_in_its_name(percent):
    from compressors.builders.techniques import get_technique

    technique = get_technique(f"l1-{percent}")
    assert technique.name == f"l1-{percent}"
    assert technique.config == L1PruneConfig(amount=percent / 100)
    assert technique.artifact_kind == "torch-sparse" and f"{percent}%" in technique.summary


@pytest.mark.parametrize("name", ["l1-0", "l1-3", "l1-4", "l1-96", "l1-99", "l1-05", "l1-99+dynamic-int8"])
def test_l1_sparsity_out_of_range_names_the_value_and_the_range(name):
    from compressors.builders.techniques import ChainError

    value = name.split("+")[0].removeprefix("l1-")
    with pytest.raises(ChainError, match=f"sparsity percent {value} is not an integer from 5 to 95; "
                                         "valid: l1-5 to l1-95"):
        parse_chain(name)


def test_l1_50_csr_is_still_its_own_variant_beside_the_family():
    from compressors.builders.techniques import TECHNIQUES, get_technique

    csr = get_technique("l1-50-csr")
    assert "l1-50-csr" in TECHNIQUES.names()
    assert csr.config == L1PruneConfig(amount=0.5, kernel="csr") and csr.artifact_kind == "torch-sparse-csr"
    assert get_technique("l1-50").config.kernel == "dense"
    assert "l1-30-csr" not in TECHNIQUES  # only l1-50 has a CSR variant
