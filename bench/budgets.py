"""Load ``bench/budgets.toml`` and judge measurements against it.

Every value is checked when the file loads (type and range), so a typo stops the run before any
build, not after an hour of measuring. A configuration known to exceed its budget is declared with
``known_over_budget = "reason, with the measured figure"`` (and ``known_figure``, the measured
value of the metric it exceeds): it still runs and records everything, and is reported as a strict
expected failure (:func:`judge`): the run stays green while it stays over budget, and fails when it
starts meeting the budget (remove the declaration) or gets clearly worse than declared.

Which keys exist, their valid ranges, what a verdict calls them and which figure of a result row each
limits are declared with the metric they limit, in :mod:`compressors.records.metric_table` (its
``budgets``); :func:`check_row` iterates them.

Memory: the absolute MiB figures were measured on the registered models. A model given by path or
hub id is held to ``max_peak_memory_vs_fp32``, its peak memory over the same model's fp32 peak in
the same run: given in the file, or derived from the registered reference model of its task
(:data:`REFERENCE_MODELS`): this technique's MiB budget there over fp32's, times
:data:`RELATIVE_HEADROOM`. ``--budgets FILE`` overrides any entry in the same TOML form (a user
model's table is ``[technique.models.<its slug>]``, absolute MiB included).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

from compressors import CompressbenchError
from compressors.builders.models import MODELS
from compressors.builders.techniques import ChainError, parse_chain
from compressors.records.metric_table import budget_keys

BUDGETS_FILE = Path(__file__).with_name("budgets.toml")
# The registered model whose measured budgets a user model's relative memory budget is derived from.
REFERENCE_MODELS = {"sequence-classification": "minilm-sst2", "causal-lm": "smollm2-135m"}
# The MiB budgets are measured + ~30% for the technique and fp32 alike; their ratio is divided by the
# fp32 peak measured in the run (not by fp32's budget), so it gets that headroom back.
RELATIVE_HEADROOM = 1.3
DECLARATION_KEYS = ("known_over_budget", "known_figure")
# How much worse than its declared figure a known exception may measure before it fails: the larger
# of an absolute margin (pp or %-points) and a share of the figure.
WORSE_THAN_DECLARED = (0.5, 0.05)


class BudgetError(CompressbenchError):
    """The budgets file is malformed or names something that does not exist."""


@dataclasses.dataclass(frozen=True, init=False)
class Budget:
    """The limits of one technique on one model, by budget key (``Budget("fp32", "m", max_peak_memory_mb=470)``,
    read as ``budget.max_peak_memory_mb``: None where the budget has no such limit), with a declared exception
    (``known_over_budget``, ``known_figure``) and, for a derived relative memory limit, where it came from."""

    technique: str
    model: str
    limits: dict
    known_over_budget: str | None = None
    known_figure: float | None = None
    memory_basis: str | None = None  # where a derived relative memory budget came from

    def __init__(self, technique: str, model: str, known_over_budget: str | None = None,
                 known_figure: float | None = None, memory_basis: str | None = None, **limits: float | None):
        unknown = sorted(set(limits) - set(budget_keys()))
        if unknown:
            raise BudgetError(f"unknown budget keys {unknown}; budget keys: {sorted(budget_keys())}")
        for name, value in (("technique", technique), ("model", model), ("known_over_budget", known_over_budget),
                            ("known_figure", known_figure), ("memory_basis", memory_basis),
                            ("limits", {k: limits.get(k) for k in budget_keys()})):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        limits = self.__dict__.get("limits")
        if limits is not None and name in budget_keys():
            return limits.get(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def to_dict(self) -> dict:
        values = {k: self.limits.get(k) for k in budget_keys()}
        if self.memory_basis:
            values["memory_basis"] = self.memory_basis
        if self.known_over_budget:
            values.update(known_over_budget=self.known_over_budget, known_figure=self.known_figure)
        return values


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
        return f"{budget_keys()[self.metric][1].label}: measured {self.measured:.2f} {sign} budget {self.limit:.2f}"


def merge_budgets(base: dict[str, dict], override: dict[str, dict]) -> dict[str, dict]:
    """``override`` (a ``--budgets FILE``) over ``base``, key by key: a technique's defaults and each
    model's table are updated, never dropped."""
    merged = {t: {"defaults": dict(e["defaults"]), "models": {m: dict(v) for m, v in e["models"].items()}}
              for t, e in base.items()}
    for technique, entry in override.items():
        target = merged.setdefault(technique, {"defaults": {}, "models": {}})
        target["defaults"].update(entry["defaults"])
        for model, table in entry["models"].items():
            target["models"].setdefault(model, {}).update(table)
    return merged


def _check_table(where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise BudgetError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(allowed)}")
    keys = budget_keys()
    for key, value in table.items():
        if key in keys:
            low, high = keys[key][1].valid
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BudgetError(f"{where}: {key} = {value!r} is not a number; give a number in [{low:g}, {high:g}]")
            if not low <= value <= high:
                raise BudgetError(f"{where}: {key} = {value!r} is outside its valid range [{low:g}, {high:g}]")
        elif key == "known_over_budget":
            if not isinstance(value, str) or len(value.strip()) < 10:
                raise BudgetError(f"{where}: known_over_budget = {value!r} must say why, with the measured figure "
                                  "(a sentence)")
        elif key == "known_figure":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BudgetError(f"{where}: known_figure = {value!r} is not a number (the measured value of the "
                                  "metric it exceeds)")
    if "known_figure" in table and "known_over_budget" not in table:
        raise BudgetError(f"{where}: known_figure without known_over_budget")


def load_budgets(path: Path = BUDGETS_FILE, extra_models: frozenset[str] = frozenset()) -> dict[str, dict]:
    """Parse and validate the budgets file: ``{technique: {"defaults": {...}, "models": {name: {...}}}}``;
    ``extra_models``: the slugs of this run's models given by path or hub id, valid model names too."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BudgetError(f"cannot read budgets file {path}: {exc}") from exc
    allowed = set(budget_keys()) | set(DECLARATION_KEYS)
    budgets = {}
    for technique, table in raw.items():
        try:
            parse_chain(technique)
        except ChainError as exc:
            raise BudgetError(f"{path}: [{technique}]: {exc}") from exc
        if not isinstance(table, dict):
            raise BudgetError(f"{path}: {technique} = {table!r} is not a table; "
                              f"write [{technique!r}] and keys below it")
        models = table.get("models", {})
        defaults = {k: v for k, v in table.items() if k != "models"}
        _check_table(f"{path}: [{technique}]", defaults, allowed - set(DECLARATION_KEYS))
        for model, override in models.items():
            if model not in MODELS and model not in extra_models:
                valid = MODELS.describe_names() + "".join(f", {m}" for m in sorted(extra_models))
                raise BudgetError(f"{path}: [{technique}.models.{model}]: unknown model; valid: {valid}")
            _check_table(f"{path}: [{technique}.models.{model}]", override, allowed)
        budgets[technique] = {"defaults": defaults, "models": models}
    return budgets


def budget_for(budgets: dict[str, dict], technique: str, model: str, task: str | None = None) -> Budget:
    """The budget of ``technique`` on ``model``; a technique without an entry is an error, not a free pass.

    ``task`` given: ``model`` is a model given by path or hub id (of that task). The technique's MiB
    figure, measured on the registered models, does not apply to it (only a MiB figure in its own
    table does); its memory is held to ``max_peak_memory_vs_fp32`` (see the module docstring)."""
    if technique not in budgets and _budget_from(technique) in budgets:
        return _derived_budget(budgets, technique, model, task)
    if technique not in budgets:
        raise BudgetError(
            f"no budget for technique {technique!r} in {BUDGETS_FILE}; add a [{technique!r}] table "
            f"(budgeted techniques: {', '.join(budgets)})"
        )
    own = budgets[technique]["models"].get(model, {})
    entry = {**budgets[technique]["defaults"], **own}
    if task is None:
        return Budget(technique, model, **entry)
    entry.pop("max_peak_memory_mb", None)
    entry.update({k: v for k, v in own.items() if k == "max_peak_memory_mb"})
    basis = None
    if entry.get("max_peak_memory_vs_fp32") is None and technique != "fp32" and task in REFERENCE_MODELS:
        reference = REFERENCE_MODELS[task]
        mine, fp32 = (budget_for(budgets, t, reference) for t in (technique, "fp32"))
        if mine.max_peak_memory_mb and fp32.max_peak_memory_mb:
            ratio = mine.max_peak_memory_mb / fp32.max_peak_memory_mb
            entry["max_peak_memory_vs_fp32"] = round(ratio * RELATIVE_HEADROOM, 3)
            basis = (f"{technique} {mine.max_peak_memory_mb:g} MiB / fp32 {fp32.max_peak_memory_mb:g} MiB on "
                     f"{reference} = {ratio:.3f}, x {RELATIVE_HEADROOM} headroom")
    return Budget(technique, model, **entry, memory_basis=basis)


def _budget_from(technique: str) -> str | None:
    """The technique whose quality limits a technique without a table of its own is held to
    (``Technique.budget_from``: a float fallback's recipe), or None."""
    from compressors.builders.techniques import ChainError, parse_chain

    try:
        stages = parse_chain(technique).stages
    except ChainError:
        return None
    return stages[0].budget_from if len(stages) == 1 else None


def _derived_budget(budgets: dict[str, dict], technique: str, model: str, task: str | None) -> Budget:
    """``technique``'s budget from its ``budget_from`` technique's quality limits and fp32's memory limits (it keeps
    part of the model float, so at most the float model's memory); that table's declared exceptions do not carry."""
    source = _budget_from(technique)
    quality = budget_for(budgets, source, model, task)
    memory = budget_for(budgets, "fp32", model, task)
    limits = {k: quality.limits.get(k) for k in budget_keys() if "memory" not in k}
    limits.update({k: memory.limits.get(k) for k in budget_keys() if "memory" in k})
    basis = f"quality limits of {source}, memory limits of fp32 ({technique} has no table of its own)"
    return Budget(technique, model, memory_basis=basis, **limits)


def check(budget: Budget, accuracy_drop_pp: float | None, peak_memory_mb: float | None,
          perplexity_increase_pct: float | None = None, fp32_peak_memory_mb: float | None = None) -> list[Verdict]:
    """:func:`check_row` on figures given one by one (memory in MiB, as budgets are written)."""
    from compressors.records.results import Identity, Quality, ResultRow, SizeMemory

    def bytes_(mib):
        return None if mib is None else mib * 2**20

    row = ResultRow(Identity(budget.model, budget.technique, "-", 0),
                    quality=Quality(accuracy_drop_pp=accuracy_drop_pp, perplexity_increase_pct=perplexity_increase_pct),
                    size=SizeMemory(peak_memory_bytes=bytes_(peak_memory_mb)))
    return check_row(budget, row, bytes_(fp32_peak_memory_mb))


def check_row(budget: Budget, row, fp32_peak_memory_bytes: float | None = None,
              fp32_values: dict[str, float] | None = None) -> list[Verdict]:
    """Verdicts for each budget key of the table of metrics that the budget limits and the row has a figure for;
    what a test judges while it runs and what a report judges again from a saved row.

    ``fp32_values``: the same model's fp32 value of each metric, by metric name, for limits relative to fp32
    (``fp32_peak_memory_bytes``: that of ``memory``). A figure the row has whose key is required (a quality
    metric) but that the budget does not limit fails (a language model benchmarked with a technique budgeted
    only for accuracy must not pass unchecked).
    """
    fp32_values = {**({"memory": fp32_peak_memory_bytes} if fp32_peak_memory_bytes else {}), **(fp32_values or {})}
    verdicts = []
    for key, (metric, declared) in budget_keys().items():
        value = metric.value(row)
        figure = None if value is None else declared.figure(value, fp32_values.get(metric.name))
        if figure is None:
            continue
        limit = budget.limits.get(key)
        if limit is None:
            if declared.required:
                raise BudgetError(f"{budget.technique!r} on {budget.model!r} has no {key} in {BUDGETS_FILE}: add it "
                                  f"to the [{budget.technique!r}] table (or to "
                                  f"[{budget.technique!r}.models.{budget.model}])")
            continue
        verdicts.append(Verdict(key, figure, limit))
    return verdicts


def saved_budget(technique: str, model: str, saved: dict) -> Budget:
    """The :class:`Budget` a row saved with ``Budget.to_dict()``."""
    names = set(budget_keys()) | set(DECLARATION_KEYS) | {"memory_basis"}
    return Budget(technique, model, **{k: v for k, v in saved.items() if k in names})


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What a test does with its verdicts: ``pass``, ``fail`` or ``xfail`` (a declared exception)."""

    outcome: str
    message: str


def judge(config_id: str, budget: Budget, verdicts: list[Verdict]) -> Judgement:
    """Pass, fail, or expected failure (strict) for a declared ``known_over_budget``."""
    failed = [v for v in verdicts if not v.ok]
    where = f"[{budget.technique!r}.models.{budget.model}] in {BUDGETS_FILE.name}"
    if not budget.known_over_budget:
        if failed:
            return Judgement("fail", f"{config_id} over budget: " + "; ".join(map(str, failed)))
        return Judgement("pass", "")
    if not failed:
        return Judgement("fail", f"{config_id} is now within budget ({'; '.join(map(str, verdicts))}): "
                                 f"remove known_over_budget from {where}")
    if budget.known_figure is not None:
        absolute, share = WORSE_THAN_DECLARED
        quality = next((v for v in failed if budget_keys()[v.metric][1].required), failed[0])
        allowed = budget.known_figure + max(absolute, share * abs(budget.known_figure))
        if quality.measured > allowed:
            return Judgement("fail", f"{config_id} is worse than its declared exception: {quality} (declared "
                                     f"{budget.known_figure:g}, tolerated up to {allowed:.2f}); investigate, then "
                                     f"update known_over_budget/known_figure in {where}")
    return Judgement("xfail", f"known over budget ({'; '.join(map(str, failed))}): {budget.known_over_budget}")
