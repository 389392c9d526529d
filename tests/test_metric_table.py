"""The table of metrics (compressors/records/metric_table.py): one declaration puts a metric into every view, a
malformed one fails at registration, the legend explains exactly the columns shown, and the measurement version
follows what the isolated process measures."""

from __future__ import annotations

import importlib.util
import json

import pytest

from compressors.records import metric_table
from compressors.records.metric_table import (
    Budgeted,
    Compared,
    HtmlColumn,
    Metric,
    MetricTableError,
    register_metric,
    registered,
)
from compressors.records.results import ResultRow
from compressors.records.tables import format_markdown_table, format_table, markdown_legend, terminal_legend

BASE = {"model": "m", "technique": "fp32", "tier": "cpu", "batch_size": 32, "accuracy_pct": 90.0,
        "accuracy_drop_pp": 0.0, "size_bytes": 4 * 2**20, "size_ratio_vs_fp32": 1.0, "peak_memory_bytes": 3 * 2**20}


def fake_metric(**changes) -> Metric:
    """A metric no code knows: a score in points that rows carry as an extra key, with every view declared."""
    fields = dict(
        name="fake-score", unit="pts", higher_is_better=True, value=lambda row: row.extra.get("fake_score"),
        column="fake pts", width=9, text=lambda v: f"{v:.1f}", legend="the fake score, in points",
        isolated=True,
        compare=Compared("fake score", "fake_pct", 5.0, "the fake score falls by more than this %%",
                         lambda v: f"{v:.1f} pts"),
        budgets=(Budgeted("max_fake_shortfall", "fake shortfall (pts)", (0.0, 100.0),
                          lambda value, fp32: 100.0 - value),),
        html=HtmlColumn("fake pts", ".1f", place="cost"))
    return Metric(**{**fields, **changes})


def save_run(storage, name: str, infos: list[dict]):
    """A saved run of pytest-benchmark's shape holding ``infos`` as rows' extra_info."""
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = [{"name": f"t[{i}]", "stats": {"median": 0.002}, "extra_info": info} for i, info in enumerate(infos)]
    (folder / f"{name}.json").write_text(json.dumps({"benchmarks": benchmarks, "machine_info": {"node": "n"}}))


def test_one_registration_puts_a_metric_into_every_table_compare_and_budgets(tmp_path, capsys):
    from bench.budgets import Budget, BudgetError, check_row, load_budgets, saved_budget
    from compressors.evaluation.isolated import measurement_version
    from reports import pytest_plugin
    from reports.__main__ import main
    from reports.compare import Thresholds, add_threshold_options, metric_changes
    from reports.docs import metrics_markdown
    from reports.html import BuildOptions, entries_by_group, table_columns
    from reports.runs import find_run, load_run

    before_names, before_version = [m.name for m in metric_table.metrics()], measurement_version()
    save_run(tmp_path, "0001_a", [{**BASE, "fake_score": 42.0}, {**BASE, "technique": "int8", "fake_score": 38.0}])
    rows = [ResultRow.from_extra_info({**BASE, "fake_score": 42.0}),
            ResultRow.from_extra_info({**BASE, "technique": "int8", "fake_score": 38.0})]
    assert "fake pts" not in format_table(rows)[0]

    with registered(fake_metric()):
        # the terminal table and its legend
        header, fp32_line = format_table(rows)[0], format_table(rows)[1]
        assert header.split()[-3:] == ["fake", "pts", "verdict"] and fp32_line.split()[-1] == "42.0"
        assert "fake pts: the fake score, in points" in terminal_legend()
        # the Markdown table, as `python -m reports table --markdown` publishes it, and its legend
        assert main(["table", "--markdown", "0001", "--storage", str(tmp_path)]) == 0
        printed = capsys.readouterr().out
        assert "| mem MB | fake pts | budget |" in printed and "| 3.0 | 42.0 | - |" in printed
        assert "fake pts: the fake score, in points" in printed
        assert format_markdown_table(rows)[3].endswith("| 38.0 |")  # int8, after fp32
        # the HTML report's table
        ((_, group),) = entries_by_group([load_run(find_run("0001", tmp_path))], BuildOptions()).items()
        html_header, body = table_columns(group)
        column = html_header.index("fake pts")
        assert html_header[-1] == "WS" and {cells[column] for cells in body} == {("42.0", 42.0), ("38.0", 38.0)}
        # compare, between runs and inside pytest
        changes = {c.metric.name: c for c in metric_changes("x", rows[0], rows[1], Thresholds())}
        assert changes["fake score"].regressed and "threshold +5%" in changes["fake score"].describe()
        assert not metric_changes("x", rows[0], rows[1], Thresholds(fake_pct=20.0))[-1].regressed
        options = []
        add_threshold_options(lambda flag, **kw: options.append((flag, kw["default"])))
        assert ("--compare-fake-pct", 5.0) in options and "fake_pct" in pytest_plugin.checked()
        # budgets: the key is valid in the budgets file, saved with the row and checked against its figure
        budgets_file = tmp_path / "budgets.toml"
        budgets_file.write_text("[fp32]\nmax_accuracy_drop_pp = 0.0\nmax_fake_shortfall = 50.0\n")
        assert load_budgets(budgets_file)["fp32"]["defaults"]["max_fake_shortfall"] == 50.0
        budget = Budget("fp32", "m", max_accuracy_drop_pp=1.0, max_fake_shortfall=50.0)
        verdicts = {v.metric: v for v in check_row(budget, rows[1])}
        assert str(verdicts["max_fake_shortfall"]) == "fake shortfall (pts): measured 62.00 > budget 50.00"
        assert saved_budget("fp32", "m", budget.to_dict()).max_fake_shortfall == 50.0
        # the generated table of metrics in docs/reports.md
        line = next(line for line in metrics_markdown() if line.startswith("| `fake-score` (isolated) |"))
        assert "`fake pts`" in line and "`--compare-fake-pct` (5): falls by more %" in line
        assert "`max_fake_shortfall`" in line
        # the stored measurements: the probe measures one more metric, so they are taken again
        assert measurement_version() != before_version

    # the table is restored, and the views with it
    assert [m.name for m in metric_table.metrics()] == before_names and measurement_version() == before_version
    assert "fake" not in format_table(rows)[0] and "fake" not in terminal_legend()
    with pytest.raises(BudgetError, match=r"unknown keys \['max_fake_shortfall'\]"):
        load_budgets(budgets_file)


@pytest.mark.parametrize("changes, match", [
    ({"name": "accuracy"}, "'accuracy': registered twice"),
    ({"name": "Fake score"}, "invalid metric name"),
    ({"higher_is_better": None}, "must be True or False"),
    ({"tasks": frozenset({"translation"})}, "tasks"),
    ({"width": 3}, "is 8 wide, its width 3"),
    ({"legend": ""}, "needs its legend line"),
    ({"column": "acc/ppl", "width": 9}, "shares column 'acc/ppl' with 'accuracy'"),
    ({"compare": Compared("fake", "size_pct", 5.0, "x", str)}, "'size_pct' or label 'fake' already belongs"),
    ({"compare": Compared("fake", "fake_pct", 5.0, "x", str, test="t-test")}, "compare test 't-test'"),
    ({"compare": Compared("fake", "fake_pct", -1.0, "x", str)}, "a number >= 0"),
    ({"budgets": (Budgeted("max_peak_memory_mb", "m", (0, 1)),)}, "already belongs to another metric"),
    ({"budgets": (Budgeted("fake_limit", "m", (0, 1)),)}, "starting with 'max_'"),
    ({"html": HtmlColumn("fake", ".1f", place="footer")}, "html place 'footer'"),
])
def test_a_malformed_or_duplicate_metric_fails_at_registration(changes, match):
    before = metric_table.metrics()
    with pytest.raises(MetricTableError, match=match):
        register_metric(fake_metric(**changes))
    assert metric_table.metrics() == before


def test_the_legend_explains_the_columns_shown_and_which_way_each_ratio_is_better():
    classifier = [ResultRow.from_extra_info(BASE)]
    generation = classifier + [ResultRow.from_extra_info({**BASE, "model": "lm", "scenario": "gen32",
                                                          "per_token_s": 0.01})]
    terminal_header = format_table(classifier)[0]
    for header in ("median ms", "ms/tok", "x fp32 [95% CI]", "acc/ppl", "drop", "size MB", "size x", "mem MB"):
        assert header in terminal_header and f"{header}" in terminal_legend()
    assert "verdict:" in terminal_legend() and "budget:" not in terminal_legend()
    # the Markdown table leaves out a column no row has, and so does its legend; it explains the budget column
    assert "ms/tok" not in format_markdown_table(classifier)[0] and "ms/tok" not in markdown_legend(classifier)
    assert "ms/tok" in format_markdown_table(generation)[0] and "ms/tok:" in markdown_legend(generation)
    assert "budget: " in markdown_legend(classifier) and "verdict" not in markdown_legend(classifier)
    assert "x fp32 [95% CI] (better above 1):" in markdown_legend(classifier)
    assert "size x (better below 1):" in markdown_legend(classifier)


def _module(tmp_path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_measurement_code_identity_ignores_docstrings_and_comments_not_code(tmp_path):
    from compressors.evaluation.isolated import code_identity, measurement_version

    original = _module(tmp_path, "a", '"""Module."""\ndef f(x):\n    """Doc."""\n    return x * 2\n')
    reworded = _module(tmp_path, "b", '"""Other words."""\n\ndef f(x):\n    # a comment\n    return x * 2  # twice\n')
    changed = _module(tmp_path, "c", '"""Module."""\ndef f(x):\n    """Doc."""\n    return x * 3\n')
    assert code_identity(original) == code_identity(reworded) != code_identity(changed)
    assert code_identity(original.f) == code_identity(reworded.f) != code_identity(changed.f)
    isolated = metric_table.isolated_metric_names()
    assert isolated == ["accuracy", "memory", "perplexity"]
    assert measurement_version(isolated) == measurement_version() != measurement_version(isolated + ["f1"])
