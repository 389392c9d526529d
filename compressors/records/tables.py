"""The results table, in the terminal and as Markdown, and its legend: columns from the table of metrics.

Each column is a header of :mod:`compressors.records.metric_table` (in the order the metrics were
registered); metrics that share a header share the column (``acc/ppl``: accuracy for classifiers,
perplexity for language models). The legend explains exactly the columns a table shows, from the metrics'
legend lines, and says which way each ratio to fp32 is better.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from compressors.records.metric_table import Metric, metrics
from compressors.records.results import ResultRow

FIRST = "configuration"
MIN_FIRST_WIDTH = 44
VERDICT_LEGEND = ("verdict: the test's outcome (passed; failed: over budget or broken; xfailed: a declared "
                  "exception, known over budget; saved: read back from a saved run)")
BUDGET_LEGEND = ("budget: the budget saved with the row (bench/budgets.toml), judged again on the row's own figures: "
                 "within, declared exception (known over budget: the test was a strict expected failure) or over; "
                 "-: no budget saved")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the results table: a header and the metrics that fill it, first with a value first."""

    header: str
    metrics: tuple[Metric, ...]

    @property
    def width(self) -> int:
        return self.metrics[0].width

    @property
    def optional(self) -> bool:
        return self.metrics[0].optional

    def cell(self, row: ResultRow) -> str:
        for metric in self.metrics:
            text = metric.cell_text(row)
            if text is not None:
                return text
        return self.metrics[0].empty

    @property
    def legend(self) -> str:
        direction = next((m.direction for m in self.metrics if m.direction), "")
        header = f"{self.header} ({direction})" if direction else self.header
        return f"{header}: " + ", or ".join(m.legend for m in self.metrics)


def columns() -> list[Column]:
    """The table's columns after ``configuration``, in the order their first metric was registered."""
    by_header: dict[str, list[Metric]] = {}
    for metric in metrics():
        if metric.column is not None:
            by_header.setdefault(metric.column, []).append(metric)
    return [Column(header, tuple(group)) for header, group in by_header.items()]


def _sorted(rows: list[ResultRow]) -> list[ResultRow]:
    return sorted(rows, key=lambda r: (r.identity.model, r.identity.tier, r.identity.batch_size,
                                       r.identity.scenario or "", r.identity.technique))


def table_cells(row: ResultRow, shown: list[Column] | None = None) -> list[str]:
    """One row of the results table: its configuration id, then a cell per column (of ``shown``, default all)."""
    return [row.config_id] + [column.cell(row) for column in (columns() if shown is None else shown)]


def format_table(rows: list[ResultRow]) -> list[str]:
    """The results table the suite prints and ``python -m reports table`` shows, every column.

    Classifiers show accuracy and its drop in pp; language models perplexity and its rise in %,
    and their generation rows the time per generated token.
    """
    shown = columns()
    width = max([MIN_FIRST_WIDTH] + [len(row.config_id) for row in rows])

    def line(cells: list[str], verdict: str) -> str:
        first, *rest = cells
        aligned = [f"{c:>{column.width}}" for c, column in zip(rest, shown, strict=True)]
        return " ".join([f"{first:<{width}}", *aligned]) + f"  {verdict}"

    header = line([FIRST] + [column.header for column in shown], "verdict")
    return [header] + [line(table_cells(row, shown), row.outcome or "") for row in _sorted(rows)]


def format_columns(header: list[str], body: list[list[str]], left: int = 1) -> list[str]:
    """A plain terminal table of text cells: each column as wide as its widest cell, the first ``left``
    columns aligned left and the rest (figures) right, for the tables that are not result rows."""
    widths = [max(len(str(cells[i])) for cells in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}"
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header)] + [line(cells) for cells in body]


def markdown_columns(rows: list[ResultRow]) -> list[Column]:
    """The columns the Markdown table of ``rows`` shows: all but the optional ones no row has (``ms/tok``)."""
    return [column for column in columns()
            if not column.optional or any(column.cell(row) != column.metrics[0].empty for row in rows)]


def format_markdown_table(rows: list[ResultRow], verdict: Callable[[ResultRow], str] | None = None) -> list[str]:
    """The results table as GitHub/MkDocs Markdown, as the README and docs publish it from a saved run:
    the columns of :func:`markdown_columns`, and ``verdict(row)`` as the last column, ``budget``, when given
    (a saved row keeps no test outcome of its own)."""
    rows = _sorted(rows)
    shown = markdown_columns(rows)
    header = [FIRST] + [column.header for column in shown] + (["budget"] if verdict else [])
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(shown) + (" --- |" if verdict else "")]
    for row in rows:
        cells = [cell or " " for cell in table_cells(row, shown)] + ([verdict(row)] if verdict else [])
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def legend(shown: list[Column], last: str | None = None) -> str:
    """The legend of a table showing the columns ``shown`` (then ``last``, the verdict or budget column)."""
    return ". ".join([column.legend for column in shown] + ([last] if last else [])) + "."


def terminal_legend() -> str:
    """The legend under :func:`format_table`."""
    return legend(columns(), VERDICT_LEGEND)


def markdown_legend(rows: list[ResultRow], budget: bool = True) -> str:
    """The legend under :func:`format_markdown_table` of ``rows`` (``budget``: with the budget column)."""
    return legend(markdown_columns(rows), BUDGET_LEGEND if budget else None)
