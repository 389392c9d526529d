import pytest

from bench.budgets import BudgetError, budget_for, check, load_budgets
from compressors.models import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.techniques import default_techniques

CLASSIFICATION_TECHNIQUES = default_techniques(TASK_CLASSIFICATION)


def test_every_default_technique_has_a_budget_and_int8_starts_at_one_point():
    budgets = load_budgets()
    for technique in CLASSIFICATION_TECHNIQUES:
        budget = budget_for(budgets, technique, "minilm-sst2")
        assert budget.max_accuracy_drop_pp is not None and budget.max_peak_memory_mb is not None
    assert budget_for(budgets, "dynamic-int8", "minilm-sst2").max_accuracy_drop_pp == 1.0
    assert budget_for(budgets, "onnx-int8", "minilm-sst2").max_accuracy_drop_pp == 1.0


def test_model_override_wins():
    budgets = load_budgets()
    assert (budget_for(budgets, "fp32", "bert-large-sst2").max_peak_memory_mb
            > budget_for(budgets, "fp32", "minilm-sst2").max_peak_memory_mb)


def test_unbudgeted_technique_is_an_error_not_a_pass():
    with pytest.raises(BudgetError, match="no budget for technique 'onnx-fp32\\+onnx-int8'"):
        budget_for(load_budgets(), "onnx-fp32+onnx-int8", "minilm-sst2")


@pytest.mark.parametrize("text, match", [
    ('["int3"]\nmax_accuracy_drop_pp = 1.0\n', "unknown technique 'int3'"),
    ('[fp32]\nmax_accuracy_drop = 1.0\n', "unknown keys"),
    ('[fp32.models.gpt7]\nmax_peak_memory_mb = 1\n', "unknown model"),
    ('[fp32\n', "cannot read"),
])
def test_malformed_budgets_file_fails_loudly(tmp_path, text, match):
    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=match):
        load_budgets(path)


def test_verdict_shows_measured_and_budget():
    budget = budget_for(load_budgets(), "dynamic-int8", "minilm-sst2")
    verdicts = check(budget, accuracy_drop_pp=1.4, peak_memory_mb=10.0)
    failed = [str(v) for v in verdicts if not v.ok]
    assert failed == ["accuracy drop (pp): measured 1.40 > budget 1.00"]


def test_every_language_model_technique_has_a_perplexity_budget():
    LM_TECHNIQUES = default_techniques(TASK_CAUSAL_LM)

    budgets = load_budgets()
    for model in ("smollm2-135m", "gpt2", "distilgpt2"):
        for technique in LM_TECHNIQUES:
            budget = budget_for(budgets, technique, model)
            assert budget.max_perplexity_increase_pct is not None and budget.max_peak_memory_mb is not None
    assert budget_for(budgets, "bnb-int8", "smollm2-135m").max_perplexity_increase_pct == 3.0
    assert budget_for(budgets, "bnb-nf4", "gpt2").max_perplexity_increase_pct == 10.0
    # stated per-model budgets on smollm2-135m (a second 4-bit rounding of a Q4_1-derived model)
    assert budget_for(budgets, "bnb-nf4", "smollm2-135m").max_perplexity_increase_pct == 30.0
    assert budget_for(budgets, "bnb-fp4", "smollm2-135m").max_perplexity_increase_pct == 50.0
    assert budget_for(budgets, "dynamic-int8-attn", "smollm2-135m").max_perplexity_increase_pct == 3.0


def test_perplexity_verdict_and_missing_perplexity_budget():
    budget = budget_for(load_budgets(), "bnb-int8", "smollm2-135m")
    failed = [str(v) for v in check(budget, None, 1.0, perplexity_increase_pct=3.5) if not v.ok]
    assert failed == ["perplexity increase (%): measured 3.50 > budget 3.00"]
    unbudgeted = budget_for(load_budgets(), "onnx-int8", "minilm-sst2")  # a classification-only technique
    with pytest.raises(BudgetError, match="has no max_perplexity_increase_pct"):
        check(unbudgeted, None, 1.0, perplexity_increase_pct=1.0)
