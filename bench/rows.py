"""A configuration's result row and its verdicts: every non-timing figure (quality against the fp32
baseline, size, memory, provenance), the placement check (a GPU configuration that ran partly on the
CPU), the budget and its verdicts, and the warning for a user model near chance.

What a test records is a :class:`~compressors.records.results.ResultRow`; its latency is added by
:mod:`bench.timing`. The figures come from :class:`bench.resources.Resources`; nothing here is timed.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from bench import budgets as budgets_mod
from bench.cases import Case
from bench.plugin.options import setting
from bench.plugin.state import run_state
from bench.resources import Resources
from compressors.builders.models import ModelSpec
from compressors.core.cache import library_versions
from compressors.evaluation.tasks import BASELINE
from compressors.execution.runtime import Predictor
from compressors.machine.placement import FALLBACK_PREFIX, FallbackWarning, fallback_parts
from compressors.quality.metrics import artifact_size_bytes
from compressors.quality.taskdata import TaskData
from compressors.records.results import Identity, Placement, Provenance, ResultRow, SizeMemory

NEAR_CHANCE_PP = 5.0


class NearChanceWarning(UserWarning):
    """A user model's fp32 accuracy is near chance on its data: labels swapped or mapped wrongly?"""


def session_budgets(pytest_config) -> dict:
    """bench/budgets.toml, with ``--budgets FILE`` over it (its model tables may name this run's models
    given by path or hub id)."""
    state = run_state(pytest_config)
    user = frozenset(state.user_data if state is not None else ())
    budgets = budgets_mod.load_budgets(extra_models=user)
    extra = setting(pytest_config, "budgets")
    if extra:
        budgets = budgets_mod.merge_budgets(budgets, budgets_mod.load_budgets(Path(extra), extra_models=user))
    if state is not None and state.search_budgets:  # the search's choices: held to the user's limit on the drop
        budgets = budgets_mod.merge_budgets(budgets, state.search_budgets)
    return budgets


def baseline_of(case: Case) -> Case:
    """The configuration ``case`` is judged against: the same model, fp32, on CPU."""
    return dataclasses.replace(case.with_chain(BASELINE), tier="cpu")


class Rows:
    """Builds and judges result rows from the session's ``resources``, against ``budgets``
    (:func:`session_budgets`)."""

    def __init__(self, resources: Resources, budgets: dict):
        self.resources = resources
        self.budgets = budgets
        self._near_chance_checked: set[str] = set()  # models whose fp32 accuracy was checked

    def result_row(self, case: Case) -> ResultRow:
        """Every non-timing figure of ``case``: quality vs the fp32 baseline, size, memory, provenance."""
        res = self.resources
        measured = res.measurement(case)
        baseline_case = baseline_of(case)
        baseline = measured if baseline_case.config_id == case.config_id else res.measurement(baseline_case)
        artifact, base = res.artifact(case), res.base(case.model)
        size, baseline_size = artifact_size_bytes(artifact), artifact_size_bytes(res.artifact(baseline_case))
        eval_data, data = res.eval_data(case), res.data_for(case.model)
        # train rows were used where this chain, or the base it starts from, was built from data
        train_used = case.chain.uses_data or bool((base.meta or {}).get("training"))
        if getattr(case.model, "user", False) and "accuracy" in baseline:
            self.warn_near_chance(case.model, baseline["accuracy"], data)
        return ResultRow(
            identity=Identity(model=case.model.name, technique=case.chain.name, tier=case.tier,
                              batch_size=case.batch_size, device=case.device, run_device=res.device(case),
                              task=case.model.task, scenario=case.scenario.name),
            quality=case.task.quality(measured, baseline, eval_data, case.scenario, data),
            size=SizeMemory(
                size_bytes=size, size_ratio_vs_fp32=round(size / baseline_size, 4),
                peak_memory_bytes=measured["peak_memory_bytes"], peak_rss_bytes=measured["peak_rss_bytes"],
                runtime_rss_bytes=measured["runtime_rss_bytes"],
                memory_flags=measured.get("memory_flags", []),  # negative deltas clamped to 0, named here
                vram={k: v for k, v in measured.items() if k.startswith("vram_")} or None),  # GPU tiers
            placement=Placement(placement=measured["placement"]),
            provenance=Provenance(
                recipe=case.chain.to_dict(), model_spec=case.model.to_dict(), artifact_key=artifact.key,
                artifact_meta=artifact.meta, base_artifact={"key": base.key, "meta": base.meta},
                versions=library_versions(*case.task.versions), measurement=measured.get("measurement"),
                timing_input=case.task.describe_timing_input(res.timing_input(case), case.scenario, data),
                data=data.describe(train_used)),
        )

    def check_placement(self, case: Case, row: ResultRow, predictor: Predictor) -> ResultRow:
        """Catch a configuration meant for a GPU that runs (partly) on the CPU, in the measurement
        process or the timed one. Records the fallback (empty when none) and then, per
        ``--on-fallback``: fails (default), xfails, or warns and carries on."""
        timed = predictor.placement()
        parts = [f"measurement process: {p}" for p in fallback_parts(row.placement.placement)]
        parts += [f"timed process: {p}" for p in fallback_parts(timed)]
        row = row.replace(placement={"fallback": parts, "timed_placement": timed})
        if parts:
            message = f"{case.id} {FALLBACK_PREFIX}" + "; ".join(parts)
            mode = setting(self.resources.pytest_config, "on_fallback")
            if mode == "fail":
                pytest.fail(message, pytrace=False)
            elif mode == "xfail":
                pytest.xfail(message)
            else:
                warnings.warn(FallbackWarning(message), stacklevel=2)
        return row

    def warn_near_chance(self, model: ModelSpec, accuracy: float, data: TaskData) -> None:
        """Once per model: its fp32 accuracy within 5 pp of chance (the larger of 1/labels and the most
        frequent label's share) is the usual sign of labels that mean something else to the model."""
        if model.name in self._near_chance_checked:
            return
        self._near_chance_checked.add(model.name)
        rows = data.eval()
        labels = len(data.id2label or {}) or len(set(rows.labels))
        chance = 100.0 * max(1 / max(labels, 1), max(rows.labels.count(k) for k in set(rows.labels)) / len(rows))
        if accuracy <= chance + NEAR_CHANCE_PP:
            warnings.warn(NearChanceWarning(
                f"{model.name}: fp32 accuracy {accuracy:.2f}% on {rows.source} is within {NEAR_CHANCE_PP:g} pp of "
                f"chance ({chance:.2f}%): check that the labels mean what the model's do (its labels: "
                f"{data.id2label}; --label-map maps names to ids)"), stacklevel=2)

    def verdicts(self, case: Case, row: ResultRow) -> tuple[ResultRow, budgets_mod.Budget, list[budgets_mod.Verdict]]:
        """``case``'s budget (recorded in the row's provenance) and the row's verdicts against it."""
        user = getattr(case.model, "user", False)
        budget = budgets_mod.budget_for(self.budgets, case.chain.name, case.model.name,
                                        task=case.model.task if user else None)
        row = row.replace(provenance={"budget": budget.to_dict()})
        fp32_peak = None
        if budget.max_peak_memory_vs_fp32 is not None:  # the same model's fp32 peak, measured on this machine
            fp32_peak = self.resources.measurement(baseline_of(case)).get("peak_memory_bytes")
        return row, budget, budgets_mod.check_row(budget, row, fp32_peak)

    @staticmethod
    def judge(case: Case, budget: budgets_mod.Budget, verdicts: list[budgets_mod.Verdict]) -> None:
        """Pass, fail, or a declared expected failure (bench/budgets.py: judge)."""
        judgement = budgets_mod.judge(case.id, budget, verdicts)
        if judgement.outcome == "fail":
            pytest.fail(judgement.message, pytrace=False)
        if judgement.outcome == "xfail":
            pytest.xfail(judgement.message)
