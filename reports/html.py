"""``python -m reports build``: one self-contained HTML page and a Markdown summary from saved runs.

Everything is derived from the rows of :func:`reports.runs.benchmark_rows`, grouped by model and
device, so a technique added to the suite appears without any change here.

Definitions (docs/reports.md repeats them):

- speed ratio: the paired ``speed_vs_fp32`` the suite measured (fp32 and this configuration
  alternated in the same time window, median of block ratios, with its 95% interval); for rows
  saved before it existed, ``fp32`` median / this median of the same run, model, device and batch.
- weighted score ``WS = wA*A + wCR*CR + wIS*IS`` (defaults 0.5, 0.25, 0.25), each term relative to
  ``fp32`` of the same run/model/device so that ``fp32`` scores exactly wA+wCR+wIS (1.0 by default):
  A = accuracy / fp32 accuracy (or fp32 perplexity / perplexity), CR = fp32 size / size,
  IS = fp32 median / median at the score batch size (32).
- radar: each axis in [alpha, 1], alpha = 0.1 (a floor, so the worst configuration still shows):
  accuracy on its semantic range, chance (50%, two balanced classes) -> alpha, 100% -> 1;
  latency, size and memory are costs, inverted min-max over the configurations shown
  (cheapest -> 1, dearest -> alpha); perplexity likewise inverted min-max.
- recommendation: per model and device, the configuration with the lowest median at the score
  batch size whose accuracy drop is within the limit (default 1 pp; for perplexity, its rise in %).
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import math
from collections import defaultdict
from pathlib import Path

from compressors import CompressbenchError
from compressors.machine.kernels import share_of_peak
from compressors.machine.timing import format_breakdown
from compressors.records.metric_table import Metric, metrics
from compressors.records.results import ResultRow
from reports.runs import Run, benchmark_rows
from reports.search import search_sections

BASELINE = "fp32"
RADAR_ALPHA = 0.1
CHANCE_ACCURACY_PCT = 50.0
DEFAULT_OUT = Path("reports") / "out"


class ReportExists(CompressbenchError):
    pass


class BadOption(CompressbenchError):
    pass


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """weights: (wA, wCR, wIS) of the weighted score; max_drop: accuracy-drop limit of the
    recommendation (pp; % rise for perplexity); score_batch: batch size whose latency the score,
    the Pareto chart, the radar and the recommendation use."""

    weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    max_drop: float = 1.0
    score_batch: int = 32

    def __post_init__(self):
        if len(self.weights) != 3 or any(not isinstance(w, (int, float)) or w < 0 for w in self.weights):
            raise BadOption(f"weights {self.weights!r}: need three numbers >= 0 (wA,wCR,wIS), e.g. 0.5,0.25,0.25")
        if sum(self.weights) == 0:
            raise BadOption("weights 0,0,0: at least one weight must be > 0")
        if self.max_drop < 0:
            raise BadOption(f"max drop {self.max_drop!r}: must be >= 0")
        if self.score_batch < 1:
            raise BadOption(f"score batch {self.score_batch!r}: must be >= 1")


# ---------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class Entry:
    """One configuration (run, model, device, technique) with every batch size it was timed at."""

    run: str
    model: str
    device: str
    technique: str
    rows: dict[int, ResultRow]  # batch size -> row
    speed: dict[int, float | None] = dataclasses.field(default_factory=dict)
    speed_ci: dict[int, list | None] = dataclasses.field(default_factory=dict)  # paired ratio's 95% interval
    share: dict[int, float | None] = dataclasses.field(default_factory=dict)  # of the probed peak of its kernel
    score: float | None = None
    terms: dict[str, float | None] = dataclasses.field(default_factory=dict)

    def first(self, key):
        """``key`` (a :class:`ResultRow` field name) of the first batch size that has it."""
        for batch in sorted(self.rows):
            if self.rows[batch][key] is not None:
                return self.rows[batch][key]
        return None

    def median(self, batch: int) -> float | None:
        row = self.rows.get(batch)
        return None if row is None else row.latency.median_s

    @property
    def drop(self) -> float | None:
        """Accuracy drop in pp, or perplexity rise in % when the task has perplexity instead."""
        if self.first("accuracy_drop_pp") is not None:
            return self.first("accuracy_drop_pp")
        ppl, base = self.first("perplexity"), self.first("baseline_perplexity")
        return None if ppl is None or not base else (ppl - base) / base * 100


# A language model has several timed scenarios per configuration (prefill512, gen32, the slow
# prefill512-fullppl); one row per batch size fits these charts, so they show the prefill with the
# CPU-budget perplexity. The others are in the saved JSON, `python -m reports table` and compare.
REPORTED_SCENARIOS = (None, "prefill512")


def entries_by_group(runs: list[Run], options: BuildOptions) -> dict[tuple[str, str], list[Entry]]:
    """(model, device) -> configurations, ``fp32`` first then by name, speed ratios and scores filled in."""
    entries: dict[tuple, Entry] = {}
    for run in runs:
        for row in benchmark_rows(run):
            ident = row.identity
            if ident.scenario not in REPORTED_SCENARIOS:
                continue
            device = ident.device or ident.tier
            key = (run.label, ident.model, device, ident.technique)
            entry = entries.setdefault(key, Entry(run.label, ident.model, device, ident.technique, {}))
            entry.rows[ident.batch_size] = row
            probe = (run.machine.get("compressbench") or {}).get("kernel_probe")
            entry.share[ident.batch_size] = share_of_peak(row.latency.useful_ops, row.latency.median_s, probe,
                                                          row.latency.kernel)
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in entries.values():
        groups[(entry.model, entry.device)].append(entry)
    for group in groups.values():
        group.sort(key=lambda e: (e.run, e.technique != BASELINE, e.technique))
        baselines = {e.run: e for e in group if e.technique == BASELINE}
        for entry in group:
            _fill_ratios(entry, baselines.get(entry.run), options)
    return dict(sorted(groups.items()))


def _ratio(numerator, denominator) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _fill_ratios(entry: Entry, base: Entry | None, options: BuildOptions) -> None:
    for batch in entry.rows:
        paired = entry.rows[batch].latency.speed_vs_fp32
        if paired:
            entry.speed[batch] = paired["ratio"]
            entry.speed_ci[batch] = paired.get("ci95")
        else:
            entry.speed[batch] = _ratio(base.median(batch), entry.median(batch)) if base else None
    accuracy = entry.first("accuracy_pct")
    if accuracy is not None:
        quality = _ratio(accuracy, entry.first("baseline_accuracy_pct") or (base and base.first("accuracy_pct")))
    else:
        quality = _ratio(entry.first("baseline_perplexity") or (base and base.first("perplexity")),
                         entry.first("perplexity"))
    ratio = entry.first("size_ratio_vs_fp32")
    if ratio is None and base:
        ratio = _ratio(entry.first("size_bytes"), base.first("size_bytes"))
    compression = _ratio(1.0, ratio)
    speedup = entry.speed.get(options.score_batch)
    entry.terms = {"A": quality, "CR": compression, "IS": speedup}
    if None not in entry.terms.values():
        w_a, w_cr, w_is = options.weights
        entry.score = w_a * quality + w_cr * compression + w_is * speedup


def recommendation(group: list[Entry], options: BuildOptions) -> Entry | None:
    """Fastest configuration (median at the score batch) whose drop is within ``options.max_drop``."""
    fit = [e for e in group if e.drop is not None and e.drop <= options.max_drop + 1e-9
           and e.median(options.score_batch) is not None]
    return min(fit, key=lambda e: e.median(options.score_batch), default=None)


# ---------------------------------------------------------------------------------------------- table
def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def _speed_cell(e: Entry, batch: int | None) -> tuple[str, float | None]:
    ci = e.speed_ci.get(batch)
    return _fmt(e.speed.get(batch), ".2f") + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""), e.speed.get(batch)


def _rise_cell(e: Entry, batch: int | None) -> tuple[str, float | None]:
    rise = e.drop if e.first("accuracy_drop_pp") is None else None
    return _fmt(rise, ".2f"), rise


# Where the report shows its own figure of a metric instead of the row's (metric -> cell of an entry at a batch
# size, None for the columns that are not per batch): the speed ratio falls back to the fp32 median / this
# median of the same run for rows saved before the paired ratio existed; the perplexity rise is recomputed
# from the perplexities, so rows that lack it show it too.
REPORT_CELLS = {"speed-vs-fp32": _speed_cell, "perplexity-rise": _rise_cell}


def _first(e: Entry, metric: Metric):
    """``metric``'s value of the first batch size of ``e`` that has it."""
    return next((v for b in sorted(e.rows) if (v := metric.value(e.rows[b])) is not None), None)


def _cell(e: Entry, metric: Metric, batch: int | None) -> tuple[str, float | None]:
    if metric.name in REPORT_CELLS:
        return REPORT_CELLS[metric.name](e, batch)
    if batch is None:
        value = _first(e, metric)
    else:
        row = e.rows.get(batch)
        value = None if row is None else metric.value(row)
    return _fmt(value, metric.html.spec, metric.html.scale), value


def _shown(metric: Metric, group: list[Entry]) -> bool:
    """A column is shown when it always is, or some configuration has it (or, for a metric of some tasks,
    another metric of the same tasks: accuracy's drop with accuracy)."""
    if metric.html.always or metric.html.place == "batch":
        return True
    kin = [m for m in metrics() if m.html and m.tasks == metric.tasks] if metric.tasks else [metric]
    return any(_first(e, m) is not None for e in group for m in kin)


def table_columns(group: list[Entry]) -> tuple[list[str], list[list[tuple[str, float | None]]]]:
    """Header and cells (text, sort value) of a model/device table: the table of metrics' HTML columns
    (compressors.records.metric_table) shown for this group, the batch sizes' between the quality and the cost
    columns, with each batch size's share of the kernel's probed peak, and the weighted score last."""
    batches = sorted({b for e in group for b in e.rows})
    runs = len({e.run for e in group}) > 1
    shown = [m for m in metrics() if m.html is not None and _shown(m, group)]
    quality, per_batch, cost = ([m for m in shown if m.html.place == place] for place in ("quality", "batch", "cost"))
    header = ["technique"] + (["run"] if runs else []) + [m.html.header for m in quality]
    for b in batches:
        header += [f"bs{b} {m.html.header}" for m in per_batch] + [f"bs{b} % of peak"]
    header += [m.html.header for m in cost] + ["WS"]
    body = []
    for e in group:
        cells = [(e.technique, None)] + ([(e.run, None)] if runs else [])
        cells += [_cell(e, m, None) for m in quality]
        for b in batches:
            cells += [_cell(e, m, b) for m in per_batch]
            share = e.share.get(b)
            cells.append((_fmt(share, ".1f", 100), share))
        cells += [_cell(e, m, None) for m in cost]
        cells.append((_fmt(e.score, ".3f"), e.score))
        body.append(cells)
    return header, body


# ---------------------------------------------------------------------------------------------- charts
def _quality(e: Entry) -> tuple[str, float | None, bool]:
    """(axis title, value, higher is better) of the entry's quality metric."""
    if e.first("accuracy_pct") is not None:
        return "accuracy %", e.first("accuracy_pct"), True
    return "perplexity", e.first("perplexity"), False


def _hover(e: Entry, batch: int) -> str:
    return (f"{e.technique} ({e.run})<br>accuracy {_fmt(e.first('accuracy_pct'), '.2f')}%"
            f"<br>bs{batch} median {_fmt(e.median(batch), '.3f', 1e3)} ms"
            f"<br>size {_fmt(e.first('size_bytes'), '.1f', 2**-20)} MB"
            f"<br>peak mem {_fmt(e.first('peak_memory_bytes'), '.1f', 2**-20)} MB")


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and quality, by latency."""
    order = sorted(range(len(points)),
                   key=lambda i: (points[i][0], -points[i][1] if higher_is_better else points[i][1]))
    front, best = [], None
    for i in order:
        q = points[i][1]
        if best is None or (q > best if higher_is_better else q < best):
            front.append(i)
            best = q
    return front


def pareto_figure(group: list[Entry], options: BuildOptions):
    import plotly.graph_objects as go

    batch = options.score_batch
    shown = [e for e in group if e.median(batch) is not None and _quality(e)[1] is not None]
    if not shown:
        return None
    title, _, higher = _quality(shown[0])
    points = [(e.median(batch) * 1e3, _quality(e)[1]) for e in shown]
    sizes = [(e.first("size_bytes") or 0) / 2**20 for e in shown]
    biggest = max(sizes) or 1
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers+text",
            name="configurations",
            text=[e.technique for e in shown],
            textposition="top center",
            textfont={"size": 9},
            hovertext=[_hover(e, batch) for e in shown],
            hoverinfo="text",
            marker={"size": sizes, "sizemode": "area", "sizeref": 2 * biggest / 40**2, "sizemin": 4, "opacity": 0.6},
        )
    )
    front = pareto_front(points, higher)
    fig.add_trace(
        go.Scatter(
            x=[points[i][0] for i in front],
            y=[points[i][1] for i in front],
            mode="lines+markers",
            name="Pareto front",
            line={"shape": "hv", "color": "crimson"},
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        title=f"{title} vs batch-{batch} median latency (marker area = artifact size)",
        xaxis_title=f"bs{batch} median latency, ms",
        yaxis_title=title,
        height=520,
    )
    return fig


def radar_axes(group: list[Entry], batch: int) -> dict[str, list[float | None]]:
    """Each entry's radar values in [RADAR_ALPHA, 1] (see module docstring)."""

    def inverted(values):
        present = [v for v in values if v is not None]
        if not present:
            return [None] * len(values)
        lo, hi = min(present), max(present)
        return [
            None if v is None else 1.0 if hi == lo else min(1.0, RADAR_ALPHA + (1 - RADAR_ALPHA) * (hi - v) / (hi - lo))
            for v in values
        ]

    accuracy = []
    for e in group:
        acc = e.first("accuracy_pct")
        accuracy.append(
            None
            if acc is None
            else RADAR_ALPHA
            + (1 - RADAR_ALPHA) * min(1.0, max(0.0, (acc - CHANCE_ACCURACY_PCT) / (100 - CHANCE_ACCURACY_PCT)))
        )
    axes = {"accuracy": accuracy}
    if all(a is None for a in accuracy):
        axes = {"perplexity": inverted([e.first("perplexity") for e in group])}
    axes["latency"] = inverted([e.median(batch) for e in group])
    axes["size"] = inverted([e.first("size_bytes") for e in group])
    axes["memory"] = inverted([e.first("peak_memory_bytes") for e in group])
    return axes


def radar_figure(group: list[Entry], options: BuildOptions, top: int = 5):
    import plotly.graph_objects as go

    axes = radar_axes(group, options.score_batch)
    names = list(axes)
    ranked = sorted(range(len(group)), key=lambda i: -(group[i].score or -math.inf))
    visible = set(ranked[:top]) | {i for i, e in enumerate(group) if e.technique == BASELINE}
    fig = go.Figure()
    for i, e in enumerate(group):
        values = [axes[n][i] for n in names]
        if any(v is None for v in values):
            continue
        fig.add_trace(
            go.Scatterpolar(
                r=values + values[:1],
                theta=names + names[:1],
                name=f"{e.technique} ({e.run})",
                fill="toself",
                opacity=0.5,
                visible=True if i in visible else "legendonly",
            )
        )
    if not fig.data:
        return None
    fig.update_layout(
        title=f"normalised profile (1 = best, floor {RADAR_ALPHA}); the top {top} by WS and fp32 "
        "shown, click the legend for others",
        polar={"radialaxis": {"range": [0, 1]}},
        height=520,
    )
    return fig


def parallel_figure(group: list[Entry], options: BuildOptions):
    """Size, quality and speedup on three axes, drawn as SVG lines (no WebGL: opens in any browser)."""
    import plotly.graph_objects as go

    batch = options.score_batch
    title, _, _ = _quality(group[0]) if group else ("accuracy %", None, True)
    columns = [
        ("size MB", [_none_scale(e.first("size_bytes"), 2**-20) for e in group]),
        (title, [_quality(e)[1] for e in group]),
        (f"bs{batch} speedup x", [e.speed.get(batch) for e in group]),
    ]
    keep = [i for i in range(len(group)) if all(col[i] is not None for _, col in columns)]
    if not keep:
        return None
    bounds = [(min(col[i] for i in keep), max(col[i] for i in keep)) for _, col in columns]
    fig = go.Figure()
    for i in keep:
        e = group[i]
        ys = [
            0.5 if hi == lo else (col[i] - lo) / (hi - lo) for (_, col), (lo, hi) in zip(columns, bounds, strict=True)
        ]
        text = "<br>".join(f"{name}: {col[i]:.3g}" for name, col in columns)
        fig.add_trace(
            go.Scatter(
                x=[0, 1, 2],
                y=ys,
                mode="lines+markers",
                name=f"{e.technique} ({e.run})",
                hovertext=f"{e.technique}<br>{text}",
                hoverinfo="text",
                opacity=0.7,
            )
        )
    for x, (lo, hi) in enumerate(bounds):
        fig.add_annotation(x=x, y=1.06, text=f"{hi:.3g}", showarrow=False)
        fig.add_annotation(x=x, y=-0.06, text=f"{lo:.3g}", showarrow=False)
    fig.update_layout(
        title="parallel coordinates: each line is a configuration (axis ends = min and max)",
        xaxis={"tickvals": [0, 1, 2], "ticktext": [n for n, _ in columns], "range": [-0.2, 2.2]},
        yaxis={"visible": False, "range": [-0.12, 1.12]},
        height=520,
    )
    return fig


def _none_scale(value, scale):
    return None if value is None else value * scale


def sensitivity_figure(group: list[Entry]):
    import plotly.graph_objects as go

    curves = {}
    for e in group:
        curve = e.first("sensitivity")
        if curve:
            curves.setdefault((e.run, e.first("sensitivity_key")), (e, curve))
    if not curves:
        return None
    fig = go.Figure()
    for (run, key), (_, curve) in curves.items():
        points = sorted(
            (p for p in curve if p.get("layer") is not None and p.get("drop_pp") is not None), key=lambda p: p["layer"]
        )
        fig.add_trace(
            go.Scatter(
                x=[p["layer"] for p in points],
                y=[p["drop_pp"] for p in points],
                mode="lines+markers",
                name=f"{run} ({key or 'sensitivity'})",
            )
        )
    fig.update_layout(
        title="layer sensitivity: accuracy drop when that one encoder layer is removed (held-apart train slice)",
        xaxis_title="layer",
        yaxis_title="drop pp",
        height=420,
    )
    return fig


# ---------------------------------------------------------------------------------------------- output
def _machine_lines(run: Run) -> list[tuple[str, str]]:
    m, c = run.machine, run.commit
    bench = m.get("compressbench") or {}
    cpu = m.get("cpu") or {}
    versions = bench.get("versions") or {}
    hardware = bench.get("hardware") or {}
    return [
        ("file", str(run.path)),
        ("saved", str(run.data.get("datetime", "n/a"))),
        ("commit", f"{c.get('id', 'n/a')} ({c.get('branch', '?')}{', dirty' if c.get('dirty') else ''})"),
        ("machine", f"{m.get('node', 'n/a')}: {m.get('system', '')} {m.get('release', '')} {m.get('machine', '')}"),
        ("cpu", f"{cpu.get('brand_raw', 'n/a')}, {cpu.get('count', '?')} cores"),
        ("hardware", json.dumps(hardware) if hardware else "n/a"),
        ("python", str(m.get("python_version", "n/a"))),
        ("pytest-benchmark", str(run.data.get("version", "n/a"))),
        ("libraries", ", ".join(f"{k} {v}" for k, v in versions.items()) or "n/a"),
        ("time", format_breakdown(spent).removeprefix("time: ") if (spent := run.time_spent) else "n/a (saved before "
                 "runs recorded it)"),
    ]


SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = x === '' ? NaN : Number(x), ny = y === '' ? NaN : Number(y);
      var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : isNaN(nx) && isNaN(ny)
        ? a.cells[col].textContent.localeCompare(b.cells[col].textContent) : (isNaN(nx) ? 1 : -1);
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; cursor: pointer; } td:first-child, th:first-child { text-align: left; }
.chart { min-height: 420px; } .note { color: #555; font-size: 0.9em; }
"""


def _html_table(header: list[str], body: list[list[tuple[str, float | None]]], sortable: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for cells in body:
        tds = "".join(f'<td data-v="{"" if v is None else v}">{html.escape(t)}</td>' for t, v in cells)
        rows.append(f"<tr>{tds}</tr>")
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def ranking(group: list[Entry]) -> list[Entry]:
    return sorted((e for e in group if e.score is not None), key=lambda e: -e.score)


def _recommend_text(group: list[Entry], options: BuildOptions) -> str:
    best = recommendation(group, options)
    if best is None:
        return f"no configuration with a bs{options.score_batch} timing within {options.max_drop:g} pp"
    return (
        f"{best.technique} ({best.run}): bs{options.score_batch} median "
        f"{_fmt(best.median(options.score_batch), '.3f', 1e3)} ms, "
        f"speed x{_fmt(best.speed.get(options.score_batch), '.2f')}, drop {_fmt(best.drop, '.2f')}, "
        f"size {_fmt(best.first('size_bytes'), '.1f', 2**-20)} MB"
    )


def definitions(options: BuildOptions) -> list[str]:
    w_a, w_cr, w_is = options.weights
    return [
        f"WS = {w_a:g}*A + {w_cr:g}*CR + {w_is:g}*IS, each relative to fp32 of the same run, model and device: "
        "A = accuracy / fp32 accuracy (or fp32 perplexity / perplexity), CR = fp32 size / size, "
        f"IS = fp32 median / median at batch {options.score_batch}; fp32 scores {w_a + w_cr + w_is:g}.",
        f"Recommendation: the lowest batch-{options.score_batch} median whose accuracy drop is "
        f"<= {options.max_drop:g} pp "
        "(perplexity: rise <= that many %).",
        f"Radar: axes in [{RADAR_ALPHA}, 1]; accuracy from chance ({CHANCE_ACCURACY_PCT:g}%) -> {RADAR_ALPHA} to "
        f"100% -> 1; latency, size, memory (and perplexity) inverted min-max over the configurations shown.",
        "p90/p99: percentiles of pytest-benchmark's per-round timings (n/a for runs saved without them). "
        "% of peak: the timed call's useful operations (2 x multiply-adds on its real tokens) per second over "
        "the probed throughput of the kernel it rests on (machine info: kernel_probe). "
        "speed x: paired with fp32 in the same time window (median of block ratios, [95% interval]); "
        "runs saved before the suite paired: fp32 median / this median, same batch size.",
    ]


def render(runs: list[Run], options: BuildOptions) -> tuple[str, str]:
    """(HTML page, Markdown summary) of ``runs``."""
    import plotly

    groups = entries_by_group(runs, options)
    labels = ", ".join(r.label for r in runs)
    parts = [
        f"<h1>compressbench report: {html.escape(labels)}</h1>",
        f'<p class="note">built {datetime.datetime.now().isoformat(timespec="seconds")}; '
        "click a column header to sort</p>",
    ]
    md = [f"# compressbench report: {labels}", ""]
    parts.append("<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in definitions(options)) + "</ul>")
    md += [f"- {d}" for d in definitions(options)] + [""]
    if not groups:
        parts.append("<p>These runs hold no compressbench benchmarks.</p>")
        md.append("These runs hold no compressbench benchmarks.")
    charts = 0
    for (model, device), group in groups.items():
        parts.append(f"<h2>{html.escape(model)} on {html.escape(device)}</h2>")
        md += [f"## {model} on {device}", ""]
        header, body = table_columns(group)
        parts.append(_html_table(header, body))
        md += _md_table(header, [[t for t, _ in cells] for cells in body]) + [""]
        rec = _recommend_text(group, options)
        parts.append(f"<p><b>Recommendation for {html.escape(device)}</b>: {html.escape(rec)}</p>")
        md += [f"**Recommendation for {device}**: {rec}", ""]
        ranked = ranking(group)
        parts.append(
            "<h3>Weighted score</h3><ol>"
            + "".join(
                f"<li>{html.escape(e.technique)} ({html.escape(e.run)}): WS {e.score:.3f} "
                f"(A {e.terms['A']:.3f}, CR {e.terms['CR']:.2f}, IS {e.terms['IS']:.2f})</li>"
                for e in ranked
            )
            + "</ol>"
        )
        md += (
            ["Weighted score, ranked:", ""]
            + [
                f"{i}. {e.technique} ({e.run}): WS {e.score:.3f} (A {e.terms['A']:.3f}, CR {e.terms['CR']:.2f}, "
                f"IS {e.terms['IS']:.2f})"
                for i, e in enumerate(ranked, 1)
            ]
            + [""]
        )
        for fig in (
            pareto_figure(group, options),
            radar_figure(group, options),
            parallel_figure(group, options),
            sensitivity_figure(group),
        ):
            if fig is None:
                continue
            # plotly.js inlined once, so the page opens offline and stays one file
            parts.append(
                '<div class="chart">'
                + fig.to_html(
                    full_html=False, include_plotlyjs=charts == 0, default_height="520px", div_id=f"chart-{charts}"
                )
                + "</div>"
            )
            charts += 1
    for run in runs:
        for model, record, rows in search_sections(run):
            chart, html_part, md_part = _search_section(run, model, record, rows, charts)
            parts.append(html_part)
            md += md_part
            charts += chart
    parts.append("<h2>Runs: machines and library versions</h2>")
    md += ["## Runs: machines and library versions", ""]
    for run in runs:
        lines = _machine_lines(run)
        parts.append(
            f"<h3>{html.escape(run.label)}</h3>"
            + _html_table(["", ""], [[(k, None), (v, None)] for k, v in lines], False)
        )
        md += [f"### {run.label}", ""] + [f"- {k}: {v}" for k, v in lines] + [""]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>compressbench report: {html.escape(labels)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}"
        f"<p class='note'>plotly {plotly.__version__}</p><script>{SORT_SCRIPT}</script></body></html>"
    )
    return page, "\n".join(md) + "\n"


def _search_section(run: Run, model, record, rows, charts: int) -> tuple[int, str, list[str]]:
    """The accuracy-aware search of one model of ``run`` (reports/search.py): goal and rule, the frontier chart,
    each winner's held-apart vs evaluation drop; (charts drawn, HTML, Markdown lines)."""
    from reports.search import agreement_table, frontier_figure, goal_text, totals_text

    title = f"Accuracy-aware search: {model.name} ({run.label})"
    notes = [f"goal: {goal_text(record.goal)}", f"rule: {record.rule}", f"search: {totals_text(record)}"]
    part = [f"<h2>{html.escape(title)}</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    md = [f"## {title}", ""] + [f"- {n}" for n in notes] + [""]
    fig = frontier_figure(model, record.goal, rows)
    if fig is not None:
        part.append('<div class="chart">' + fig.to_html(full_html=False, include_plotlyjs=charts == 0,
                                                         default_height="520px",
                                                         div_id=f"search-frontier-{charts}") + "</div>")
    header, body = agreement_table(model, record.goal, rows)
    part.append("<h3>Held-apart vs evaluation drop of each winner</h3>"
                + _html_table(header, [[(c, None) for c in cells] for cells in body]))
    md += ["Held-apart vs evaluation drop of each winner:", ""] + _md_table(header, body) + [""]
    return (fig is not None), "".join(part), md


def default_out(runs: list[Run]) -> Path:
    return DEFAULT_OUT / "+".join(r.label for r in runs)


def write_report(
    runs: list[Run], out: Path, options: BuildOptions, force: bool = False, storage: Path | None = None
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into ``out``; refuse an existing report unless ``force``."""
    out = Path(out)
    if storage is not None and (out.resolve() == storage.resolve() or storage.resolve() in out.resolve().parents):
        raise BadOption(f"--out {out}: inside the benchmark storage {storage}; reports never write there")
    page_path, md_path = out / "report.html", out / "summary.md"
    existing = [p for p in (page_path, md_path) if p.exists()]
    if existing and not force:
        raise ReportExists(f"{existing[0]} exists: pass --force to overwrite it, or --out DIR for another folder")
    page, summary = render(runs, options)
    out.mkdir(parents=True, exist_ok=True)
    page_path.write_text(page, encoding="utf-8")
    md_path.write_text(summary, encoding="utf-8")
    return page_path, md_path
