"""Load ``bench/budgets.toml`` and check measurements against it."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from compressors import CompressbenchError
from compressors.models import MODELS
from compressors.techniques import ChainError, parse_chain

BUDGETS_FILE = Path(__file__).with_name("budgets.toml")
BUDGET_KEYS = {
    "max_accuracy_drop_pp": "accuracy drop (pp)",
    "max_perplexity_increase_pct": "perplexity increase (%)",
    "max_peak_memory_mb": "peak memory (MiB)",
}


class BudgetError(CompressbenchError):
    """The budgets file is malformed or names something that does not exist."""


@dataclasses.dataclass(frozen=True)
class Budget:
    technique: str
    model: str
    max_accuracy_drop_pp: float | None = None
    max_perplexity_increase_pct: float | None = None
    max_peak_memory_mb: float | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in BUDGET_KEYS}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One budget check: measured value, limit, and whether it passed."""

    metric: str
    measured: float
    limit: float

    @property
    def ok(self) -> bool:
        return self.measured <= self.limit

    def __str__(self) -> str:
        sign = "<=" if self.ok else ">"
        return f"{BUDGET_KEYS[self.metric]}: measured {self.measured:.2f} {sign} budget {self.limit:.2f}"


def _check_keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise BudgetError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(allowed)}")


def load_budgets(path: Path = BUDGETS_FILE) -> dict[str, dict]:
    """Parse and validate the budgets file: ``{technique: {"defaults": {...}, "models": {name: {...}}}}``."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BudgetError(f"cannot read budgets file {path}: {exc}") from exc
    budgets = {}
    for technique, table in raw.items():
        try:
            parse_chain(technique)
        except ChainError as exc:
            raise BudgetError(f"{path}: [{technique}]: {exc}") from exc
        models = table.get("models", {})
        defaults = {k: v for k, v in table.items() if k != "models"}
        _check_keys(f"{path}: [{technique}]", defaults, set(BUDGET_KEYS))
        for model, override in models.items():
            if model not in MODELS:
                raise BudgetError(
                    f"{path}: [{technique}.models.{model}]: unknown model; valid: {MODELS.describe_names()}"
                )
            _check_keys(f"{path}: [{technique}.models.{model}]", override, set(BUDGET_KEYS))
        budgets[technique] = {"defaults": defaults, "models": models}
    return budgets


def budget_for(budgets: dict[str, dict], technique: str, model: str) -> Budget:
    """The budget of ``technique`` on ``model``; a technique without an entry is an error, not a free pass."""
    if technique not in budgets:
        raise BudgetError(
            f"no budget for technique {technique!r} in {BUDGETS_FILE}; add a [{technique!r}] table "
            f"(budgeted techniques: {', '.join(budgets)})"
        )
    entry = {**budgets[technique]["defaults"], **budgets[technique]["models"].get(model, {})}
    return Budget(technique, model, **entry)


def check(
    budget: Budget,
    accuracy_drop_pp: float | None,
    peak_memory_mb: float | None,
    perplexity_increase_pct: float | None = None,
) -> list[Verdict]:
    """Verdicts for each measured metric the budget limits.

    A measured quality metric whose technique has no limit for it fails (a language model
    benchmarked with a technique budgeted only for accuracy must not pass unchecked).
    """
    verdicts = []
    for key, measured in (
        ("max_accuracy_drop_pp", accuracy_drop_pp),
        ("max_perplexity_increase_pct", perplexity_increase_pct),
    ):
        if measured is None:
            continue
        limit = getattr(budget, key)
        if limit is None:
            raise BudgetError(
                f"{budget.technique!r} on {budget.model!r} has no {key} in {BUDGETS_FILE}: add it to "
                f"the [{budget.technique!r}] table (or to [{budget.technique!r}.models.{budget.model}])"
            )
        verdicts.append(Verdict(key, measured, limit))
    if budget.max_peak_memory_mb is not None and peak_memory_mb is not None:
        verdicts.append(Verdict("max_peak_memory_mb", peak_memory_mb, budget.max_peak_memory_mb))
    return verdicts
