import random

import pytest
import torch

from compressors.builders.training import (
    FineTuneRecipe,
    count_parameters,
    length_bucketed_batches,
    sample_indices,
    train_classifier,
)
from compressors.core.config import ConfigError
from compressors.quality.data import TextClassificationSplit
from tests.conftest import save_tiny_bert_classifier


def test_bucketing_covers_every_example_once_and_groups_lengths():
    rng = random.Random(1)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    batches = length_bucketed_batches(lengths, batch_size=16, bucket_batches=4, rng=random.Random(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = length_bucketed_batches(lengths, batch_size=16, bucket_batches=1, rng=random.Random(0))
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 2


def test_sample_is_seeded_and_bounded():
    assert sample_indices(100, 10, 3) == sample_indices(100, 10, 3)
    assert sample_indices(100, 10, 3) != sample_indices(100, 10, 4)
    assert len(sample_indices(5, 10, 0)) == 5


@pytest.mark.parametrize("field, value", [("n_sentences", 0), ("lr", -1.0), ("max_length", 4), ("warmup_ratio", 2.0)])
def test_recipe_validation_names_field(field, value):
    with pytest.raises(ConfigError, match=field):
        FineTuneRecipe(**{field: value})


def test_training_learns_a_toy_task(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_bert_classifier(tmp_path / "m")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pos, neg = ["good film", "great movie", "a very good film"], ["bad film", "awful movie", "a very poor film"]
    sentences = tuple(pos * 20 + neg * 20)
    labels = tuple([1] * 60 + [0] * 60)
    train = TextClassificationSplit("train", sentences, labels, "toy", "x")
    report = train_classifier(model, tokenizer, train, FineTuneRecipe(n_sentences=120, epochs=3, lr=3e-3, batch_size=8),
                              progress=False)
    enc = tokenizer(list(pos + neg), padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits.argmax(-1).tolist()
    assert predicted == [1, 1, 1, 0, 0, 0]
    assert (
        report.steps == 45 and report.sentences == 120 and report.final_loss < 0.69
    )  # below chance (ln 2); the smoothed loss lags
    assert (report.trainable_parameters, report.total_parameters) == count_parameters(model)
    assert report.optimizer == "AdamW (fused)" and report.to_dict()["optimizer"] == report.optimizer


def test_fused_adamw_is_the_same_update_as_the_for_loop():
    """train_classifier's optimiser (compressors.builders.training.adamw): the fused implementation where
    PyTorch has one, differing from the for-loop AdamW by rounding only."""
    from compressors.builders.training import adamw

    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    results = {}
    for name in ("fused", "for-loop"):
        params = [p.clone().requires_grad_(True) for p in start]
        groups = [{"params": params[:1], "weight_decay": 0.01}, {"params": params[1:], "weight_decay": 0.0}]
        if name == "fused":
            optimizer, label = adamw(groups, 1e-2)
            assert label == "AdamW (fused)", label  # PyTorch >= 2.4 has a fused CPU kernel
        else:
            optimizer = torch.optim.AdamW(groups, lr=1e-2, fused=False)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results[name] = [p.detach() for p in params]
    moved = max((a - b).abs().max().item() for a, b in zip(results["for-loop"], start, strict=True))
    assert moved > 0.01  # the steps did move the weights
    for fused, loop in zip(results["fused"], results["for-loop"], strict=True):
        torch.testing.assert_close(fused, loop, rtol=1e-5, atol=1e-6)


def test_adamw_falls_back_and_says_why():
    from compressors.builders.training import adamw

    params = [torch.zeros(4, device="meta", requires_grad=True)]  # a device without fused kernels
    optimizer, label = adamw([{"params": params, "weight_decay": 0.0}], 1e-3)
    assert label == "AdamW (for-loop: no fused kernel for parameters on meta)"
    assert not optimizer.defaults["fused"]
