import numpy as np
import pytest
import torch

from compressors.builders.techniques import build_chain, parse_chain
from compressors.builders.techniques.lowrank import LowRankConfig, factorize, plan_ranks, rank_for, svd_factors
from compressors.execution.runtime import load_predictor, load_torch_module


def test_factorization_error_decreases_as_rank_grows():
    torch.manual_seed(0)
    weight = torch.randn(48, 32)
    errors = []
    for rank in (2, 8, 16, 32):
        first, second = svd_factors(weight, rank)
        errors.append(float(torch.linalg.norm(second @ first - weight) / torch.linalg.norm(weight)))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-5  # full rank reconstructs


def test_rank_rule_skips_matrices_that_would_not_shrink(tiny_base):
    model = load_torch_module(tiny_base)
    assert rank_for((384, 384), 0.5) == 192
    # tiny BERT: 32x32 attention (r=16: 16*64 = 1024 = 32*32, not smaller), 64x32 feed-forward (r=16: 1536 < 2048)
    plan = plan_ranks(model, LowRankConfig(keep=0.5))
    assert plan and all("intermediate" in n or "output.dense" in n and "attention" not in n for n in plan)
    assert len(plan_ranks(model, LowRankConfig(keep=0.25))) == 2 * 6 + 1  # + the pooler


def test_factorized_model_shrinks_and_stays_close_at_full_rank(tiny_base, tiny_batch):
    model = load_torch_module(tiny_base)
    prepared = {k: torch.from_numpy(v) for k, v in tiny_batch.items()}
    with torch.inference_mode():
        reference = model(**prepared).logits
    full = {name: min(m.weight.shape) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name != "classifier"}
    factorize(model, full)
    with torch.inference_mode():
        torch.testing.assert_close(model(**prepared).logits, reference, rtol=1e-4, atol=1e-4)


def test_lowrank_artifact_reloads_without_pickle(tiny_base, ctx, tiny_batch):
    artifact = build_chain(tiny_base, parse_chain("lowrank-25"), ctx, "tiny")
    assert artifact.meta["parameters_after"] < artifact.meta["parameters_before"]
    predictor = load_predictor(artifact)
    layer = predictor.model.bert.encoder.layer[0].intermediate.dense
    assert isinstance(layer, torch.nn.Sequential) and layer[0].out_features == 8
    assert np.isfinite(predictor.logits(predictor.prepare(tiny_batch))).all()


def test_lowrank_cannot_be_chained_further():
    from compressors.builders.techniques import ChainError

    with pytest.raises(ChainError, match="lowrank-50"):
        parse_chain("lowrank-50+dynamic-int8")


@pytest.mark.parametrize("name, keep, ft", [("lowrank-1", 0.01, False), ("lowrank-33", 0.33, False),
                                            ("lowrank-99-ft", 0.99, True), ("lowrank-10-ft", 0.1, True)])
def test_lowrank_family_keeps_the_rank_share_in_its_name(name, keep, ft):
    from compressors.builders.techniques import get_technique
    from compressors.builders.training import REFINETUNE_RECIPE

    technique = get_technique(name)
    assert technique.config == LowRankConfig(keep=keep, recipe=REFINETUNE_RECIPE if ft else None)
    assert technique.trains is ft and technique.uses_data is ft
    assert f"keeping {round(keep * 100)}% of the rank" in technique.summary


@pytest.mark.parametrize("name, valid", [("lowrank-0", "lowrank-1 to lowrank-99"),
                                         ("lowrank-100", "lowrank-1 to lowrank-99"),
                                         ("lowrank-0-ft", "lowrank-1-ft to lowrank-99-ft"),
                                         ("lowrank-150-ft", "lowrank-1-ft to lowrank-99-ft")])
def test_lowrank_share_out_of_range_names_the_value_and_the_range(name, valid):
    from compressors.builders.techniques import ChainError

    value = name.split("-")[1]
    with pytest.raises(ChainError, match=f"kept rank percent {value} is not an integer from 1 to 99; valid: {valid}"):
        parse_chain(name)
