"""The table of metrics: every figure a result row reports, declared once.

A :class:`Metric` says what the figure is (name, unit, which way is better, which tasks have it, how to
read it from a :class:`~compressors.records.results.ResultRow`), how each view shows it and judges it:

* ``column``: its column in the results table, terminal and Markdown (:mod:`compressors.records.tables`),
  with its width, cell format and legend line; metrics of different tasks may share a column (``acc/ppl``:
  accuracy for classifiers, perplexity for language models);
* ``html``: its column in the HTML report's tables (``reports/html.py``);
* ``compare``: how ``python -m reports compare`` and ``--benchmark-compare`` judge it between runs
  (``reports/compare.py``, ``reports/pytest_plugin.py``): threshold option and default, and the test;
* ``budgets``: the keys of ``bench/budgets.toml`` that limit it and how a row's figure is checked against
  them (``bench/budgets.py``);
* ``isolated``: measured by the isolated measurement process; the names of these metrics go into the
  measurement version (:func:`compressors.evaluation.isolated.measurement_version`), so stored measurements
  are taken again when the probe measures a new one.

Every view iterates :func:`metrics` (in registration order), so adding a metric is its measurement (what puts
the figure into the row: ``compressors/evaluation/tasks.py`` or the probe, and a field of the row) plus one
:func:`register_metric` call here. Registration fails loudly on a duplicate or malformed entry, at import.
The shape follows lm-evaluation-harness's ``register_metric(higher_is_better=..., aggregation=...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

from compressors import CompressbenchError
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS
from compressors.records.results import ResultRow

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
FIELD = re.compile(r"^[a-z][a-z0-9_]*$")
COMPARE_TESTS = ("threshold", "mcnemar", "latency")
HTML_PLACES = ("quality", "batch", "cost")


class MetricTableError(CompressbenchError):
    """A duplicate or malformed metric declaration."""


@dataclasses.dataclass(frozen=True)
class Compared:
    """How two runs' figures of a metric are judged (``reports/compare.py``).

    Args:
        label: its name in the comparison's lines (``latency median``).
        threshold: the threshold's name (``latency_pct``); its option is ``--compare-latency-pct``.
        default: the threshold's default.
        regression: what a regression is, for the option's help (``%`` written ``%%``).
        absolute: the threshold is in the metric's own unit (pp) rather than percent of the earlier value.
        test: ``threshold`` (the move alone), ``mcnemar`` (and the exact McNemar test on the per-sentence
            correctness), ``latency`` (and a rank test on paired ratios beyond the between-run spread,
            confirmed by re-timing: judged once the whole run has finished, not after each test).
        show: a value as the comparison prints it.
    """

    label: str
    threshold: str
    default: float
    regression: str
    show: Callable[[float], str]
    absolute: bool = False
    test: str = "threshold"

    @property
    def option(self) -> str:
        return "--compare-" + self.threshold.replace("_", "-")

    @property
    def timing(self) -> bool:
        return self.test == "latency"


@dataclasses.dataclass(frozen=True)
class Budgeted:
    """A key of ``bench/budgets.toml`` that limits a metric (``bench/budgets.py``).

    Args:
        key: the key (``max_peak_memory_mb``); a row passes when ``figure <= limit``.
        label: what a verdict line calls it (``peak memory (MiB)``).
        valid: the inclusive range a limit must lie in (checked when the file loads).
        figure: ``figure(value, fp32_value)``: the budgeted figure from the row's value of the metric and
            the same model's fp32 value of it (None where unknown); None: nothing to check.
        required: a row that has the figure must have a limit for it (a quality budget: a technique budgeted
            only for accuracy must not pass a language model unchecked).
    """

    key: str
    label: str
    valid: tuple[float, float]
    figure: Callable[[float, float | None], float | None] = lambda value, fp32: value
    required: bool = False


@dataclasses.dataclass(frozen=True)
class HtmlColumn:
    """A metric's column in the HTML report's per model and device tables.

    Args:
        header: the column's header (per batch size: after ``bsN ``).
        spec: ``format()`` spec of ``value * scale``; a missing value shows ``n/a``.
        place: ``quality`` (before the batch sizes' columns), ``batch`` (one column per batch size),
            ``cost`` (after them).
        always: shown even when no configuration of the table has it (else only when one has it, or has
            another metric of the same tasks).
    """

    header: str
    spec: str
    scale: float = 1.0
    place: str = "cost"
    always: bool = False


@dataclasses.dataclass(frozen=True)
class Metric:
    """One figure of a result row, declared once.

    Args:
        name: its id (lowercase, ``-``), unique.
        unit: ``ms``, ``%``, ``pp``, ``MB``, ``x`` (a ratio to fp32), ``s``.
        higher_is_better: the direction; a ratio's legend line states it.
        value: how to read it from a result row (None: the row has none).
        tasks: the tasks whose rows have it (None: every task).
        column: its header in the terminal and Markdown results table (None: not there); metrics sharing a
            header share the column, and the first that has a value fills the cell.
        width: the column's width in the terminal table.
        text: the value as the table shows it.
        cell: the whole cell from the row, instead of ``text(value)`` (None: not this metric's row).
        empty: the cell when no metric of the column has a value.
        optional: the Markdown table leaves the column out when no row has it.
        legend: its line under the table (``acc/ppl: <legend>``; metrics sharing a column: joined by ``, or``).
        isolated: measured by the isolated measurement process (compressors.evaluation.probe).
        compare: how compare judges it (None: not compared).
        budgets: the budget keys that limit it.
        html: its column in the HTML report (None: not there).
    """

    name: str
    unit: str
    higher_is_better: bool
    value: Callable[[ResultRow], Any]
    tasks: frozenset[str] | None = None
    column: str | None = None
    width: int = 0
    text: Callable[[Any], str] | None = None
    cell: Callable[[ResultRow], str | None] | None = None
    empty: str = "-"
    optional: bool = False
    legend: str = ""
    isolated: bool = False
    compare: Compared | None = None
    budgets: tuple[Budgeted, ...] = ()
    html: HtmlColumn | None = None

    def cell_text(self, row: ResultRow) -> str | None:
        """The table cell of ``row``, or None when the row has no value of this metric."""
        if self.cell is not None:
            return self.cell(row)
        value = self.value(row)
        return None if value is None else self.text(value)

    @property
    def direction(self) -> str:
        """The legend's words for which way is better: stated for ratios to fp32 (``x``)."""
        if self.unit != "x":
            return ""
        return "better above 1" if self.higher_is_better else "better below 1"


_METRICS: dict[str, Metric] = {}


def _check(metric: Metric) -> None:
    def bad(why: str):
        raise MetricTableError(f"metric {metric.name!r}: {why}")

    if not isinstance(metric.name, str) or not NAME.match(metric.name):
        raise MetricTableError(f"invalid metric name {metric.name!r}: lowercase letters, digits and '-'")
    if metric.name in _METRICS:
        bad("registered twice")
    if not isinstance(metric.higher_is_better, bool):
        bad(f"higher_is_better={metric.higher_is_better!r}: must be True or False")
    if not metric.unit:
        bad("no unit")
    if not callable(metric.value):
        bad("value must be a function of the result row")
    if metric.tasks is not None and (not metric.tasks or not set(metric.tasks) <= set(TASKS)):
        bad(f"tasks {sorted(metric.tasks)}: must be some of {', '.join(TASKS)}")
    if metric.column is not None:
        if metric.width < len(metric.column):
            bad(f"column {metric.column!r} is {len(metric.column)} wide, its width {metric.width}")
        if metric.text is None and metric.cell is None:
            bad(f"column {metric.column!r} needs text (how a value shows) or cell")
        if not metric.legend:
            bad(f"column {metric.column!r} needs its legend line")
        for other in _METRICS.values():
            if other.column == metric.column and (other.width, other.empty, other.optional) != (
                    metric.width, metric.empty, metric.optional):
                bad(f"shares column {metric.column!r} with {other.name!r} but not its width, empty cell and "
                    "optional flag")
    if metric.compare is not None:
        rule = metric.compare
        if not FIELD.match(rule.threshold):
            bad(f"compare threshold {rule.threshold!r}: a lowercase identifier such as 'size_pct'")
        if rule.test not in COMPARE_TESTS:
            bad(f"compare test {rule.test!r}: one of {', '.join(COMPARE_TESTS)}")
        if not isinstance(rule.default, (int, float)) or isinstance(rule.default, bool) or rule.default < 0:
            bad(f"compare default {rule.default!r}: a number >= 0")
        for other in _METRICS.values():
            if other.compare and (other.compare.threshold == rule.threshold or other.compare.label == rule.label):
                bad(f"compare threshold {rule.threshold!r} or label {rule.label!r} already belongs to {other.name!r}")
    for budget in metric.budgets:
        if not FIELD.match(budget.key) or not budget.key.startswith("max_"):
            bad(f"budget key {budget.key!r}: a lowercase identifier starting with 'max_' (a row passes <= it)")
        low, high = budget.valid
        if not low <= high:
            bad(f"budget {budget.key}: valid range {budget.valid!r} is empty")
        if budget.key in budget_keys():
            bad(f"budget key {budget.key!r} already belongs to another metric")
    if len({b.key for b in metric.budgets}) != len(metric.budgets):
        bad("the same budget key twice")
    if metric.html is not None and metric.html.place not in HTML_PLACES:
        bad(f"html place {metric.html.place!r}: one of {', '.join(HTML_PLACES)}")


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the table (after those registered before it); raises :class:`MetricTableError` on a
    duplicate name, column mismatch, threshold or budget key, or a malformed declaration."""
    _check(metric)
    _METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove a metric (tests that register one restore the table with it)."""
    try:
        return _METRICS.pop(name)
    except KeyError:
        raise MetricTableError(f"unknown metric {name!r}; metrics: {', '.join(_METRICS)}") from None


@contextlib.contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """``metric`` in the table for the block's duration (for tests)."""
    register_metric(metric)
    try:
        yield metric
    finally:
        unregister_metric(metric.name)


def metrics() -> list[Metric]:
    """Every metric, in registration order (the order of every view's columns)."""
    return list(_METRICS.values())


def metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise MetricTableError(f"unknown metric {name!r}; metrics: {', '.join(_METRICS)}") from None


def compared() -> list[Metric]:
    return [m for m in _METRICS.values() if m.compare is not None]


def compare_options() -> tuple:
    """One option of the suite's options table per compared metric (``--compare-accuracy-pp``...): its threshold,
    with the metric's default, a number >= 0 in the metric's unit (pp) or in percent of the earlier value."""
    from compressors.core.settings import COMPARE_GROUP, Option, number

    return tuple(Option(f"compare_{m.compare.threshold}", m.compare.option, float(m.compare.default), number,
                        f"regression: {m.compare.regression.replace('%%', '%')}",
                        unit="percentage points" if m.compare.absolute else "percent", minimum=0,
                        group=COMPARE_GROUP)
                 for m in sorted(compared(), key=lambda m: m.compare.timing))


def budget_keys() -> dict[str, tuple[Metric, Budgeted]]:
    """Every budget key, with the metric it limits and its declaration."""
    return {b.key: (m, b) for m in _METRICS.values() for b in m.budgets}


def isolated_metric_names() -> list[str]:
    """The metrics the isolated measurement process measures (sorted): part of the measurement version."""
    return sorted(m.name for m in _METRICS.values() if m.isolated)


# ------------------------------------------------------------------------------------------- the metrics

def _mb(value: float) -> str:
    return f"{value / 2**20:.1f}"


def _speed_cell(row: ResultRow) -> str:
    paired = row.latency.speed_vs_fp32
    speed = "-"
    if paired and paired.get("ci95"):
        speed = f"{paired['ratio']:.2f} [{paired['ci95'][0]:.2f},{paired['ci95'][1]:.2f}]"
    return speed + ("!" if row.latency.contended else "")


def _perplexity_rise(row: ResultRow) -> float | None:
    return row.quality.perplexity_increase_pct


CLASSIFIERS, LANGUAGE_MODELS = frozenset({TASK_CLASSIFICATION}), frozenset({TASK_CAUSAL_LM})

register_metric(Metric(
    "latency-median", "ms", False, lambda row: row.latency.median_s,
    column="median ms", width=10, text=lambda v: f"{v * 1e3:.2f}",
    legend="pytest-benchmark's median of one timed call (the batch, a prefill or a generation)",
    compare=Compared("latency median", "latency_pct", 10.0, "latency median rises by more than this %%",
                     lambda v: f"{v * 1e3:.3f} ms", test="latency"),
    html=HtmlColumn("median ms", ".3f", 1e3, place="batch")))
register_metric(Metric(
    "latency-p90", "ms", False, lambda row: row.latency.p90_s, html=HtmlColumn("p90 ms", ".3f", 1e3, place="batch")))
register_metric(Metric(
    "latency-p99", "ms", False, lambda row: row.latency.p99_s, html=HtmlColumn("p99 ms", ".3f", 1e3, place="batch")))
register_metric(Metric(
    "time-per-token", "ms", False, lambda row: row.latency.per_token_s, tasks=LANGUAGE_MODELS,
    column="ms/tok", width=7, text=lambda v: f"{v * 1e3:.2f}", empty="", optional=True,
    legend="generation median / new tokens"))
register_metric(Metric(
    "speed-vs-fp32", "x", True, lambda row: (row.latency.speed_vs_fp32 or {}).get("ratio"),
    column="x fp32 [95% CI]", width=18, cell=_speed_cell,
    legend="speed vs fp32 paired in the same time window (fp32 time / this time, median of alternated blocks) "
           "with its 95% bootstrap interval; '!': another process competed for the CPU while timing",
    html=HtmlColumn("speed x", ".2f", place="batch")))
register_metric(Metric(
    "accuracy", "%", True, lambda row: row.quality.accuracy_pct, tasks=CLASSIFIERS,
    column="acc/ppl", width=8, text=lambda v: f"{v:.2f}",
    legend="accuracy % on the model's evaluation rows (SST-2 dev, 872 sentences, for the registered "
           "classifiers; a model given by path: its --dataset)",
    isolated=True,
    compare=Compared("accuracy", "accuracy_pp", 0.5, "accuracy falls by more than this many pp",
                     lambda v: f"{v:.2f}%", absolute=True, test="mcnemar"),
    html=HtmlColumn("accuracy %", ".2f", place="quality")))
register_metric(Metric(
    "accuracy-drop", "pp", False, lambda row: row.quality.accuracy_drop_pp, tasks=CLASSIFIERS,
    column="drop", width=8, text=lambda v: f"{v:.2f}", legend="fp32 minus this in pp",
    budgets=(Budgeted("max_accuracy_drop_pp", "accuracy drop (pp)", (0.0, 100.0), required=True),),
    html=HtmlColumn("drop pp", ".2f", place="quality")))
register_metric(Metric(
    "perplexity", "ppl", False, lambda row: row.quality.perplexity, tasks=LANGUAGE_MODELS,
    column="acc/ppl", width=8, text=lambda v: f"{v:.3f}",
    legend="perplexity (WikiText-2 test, or its --text-file)", isolated=True,
    compare=Compared("perplexity", "perplexity_pct", 2.0, "perplexity rises by more than this %%",
                     lambda v: f"{v:.3f}"),
    html=HtmlColumn("perplexity", ".3f", place="quality")))
register_metric(Metric(
    "perplexity-rise", "%", False, _perplexity_rise, tasks=LANGUAGE_MODELS,
    column="drop", width=8, text=lambda v: f"{v:+.2f}%", legend="perplexity rise vs fp32 in %",
    budgets=(Budgeted("max_perplexity_increase_pct", "perplexity increase (%)", (0.0, 1e6), required=True),),
    html=HtmlColumn("ppl rise %", ".2f", place="quality")))
register_metric(Metric(
    "size", "MB", False, lambda row: row.size.size_bytes,
    column="size MB", width=8, text=_mb, legend="the artifact's weight files in MiB",
    compare=Compared("size", "size_pct", 5.0, "artifact size rises by more than this %%",
                     lambda v: f"{v / 2**20:.2f} MB"),
    html=HtmlColumn("size MB", ".1f", 2**-20, always=True)))
register_metric(Metric(
    "size-ratio", "x", False, lambda row: row.size.size_ratio_vs_fp32,
    column="size x", width=7, text=lambda v: f"{v:.3f}", legend="size vs fp32",
    html=HtmlColumn("size x", ".3f", always=True)))
register_metric(Metric(
    "memory", "MB", False, lambda row: row.size.peak_memory_bytes,
    column="mem MB", width=7, text=_mb,
    legend="peak RSS of a fresh process while it loads + evaluates, above its RSS after importing the runtime",
    isolated=True,
    compare=Compared("memory", "memory_pct", 10.0, "peak memory rises by more than this %%",
                     lambda v: f"{v / 2**20:.2f} MB"),
    budgets=(Budgeted("max_peak_memory_mb", "peak memory (MiB)", (1.0, 1e7), lambda v, fp32: v / 2**20),
             Budgeted("max_peak_memory_vs_fp32", "peak memory vs the same model's fp32 (x)", (0.01, 100.0),
                      lambda v, fp32: v / fp32 if fp32 else None)),
    html=HtmlColumn("peak mem MB", ".1f", 2**-20, always=True)))
register_metric(Metric(
    "training-time", "s", False, lambda row: row.provenance.training_s,
    html=HtmlColumn("training s", ".0f")))
