"""``python -m reports search RUN``: what the accuracy-aware search of a run (``pytest bench --search``) tried,
chose and handed to the run, and whether its held-apart verdicts held on the evaluation rows.

The record is :class:`compressors.records.search_record.SearchRecord` (the run's ``compressbench.search``).
A winner's evaluation figures come from the run's own benchmark row of that model and technique (the bs32 row,
else the first with a drop): its drop is on the evaluation rows, the held-apart drop on rows the search kept
apart, so the two verdicts against the same limit can disagree; the report counts where they do.
"""

from __future__ import annotations

import dataclasses

from compressors import CompressbenchError
from compressors.records.results import ResultRow
from compressors.records.search_record import (
    SEARCH_KEY,
    Goal,
    ModelSearch,
    SearchRecord,
    SearchRecordError,
    Trial,
    search_record,
)
from compressors.records.tables import format_columns
from reports.runs import Run, benchmark_rows

EVALUATION_BATCH = 32
# Language models time several scenarios; the evaluation drop (perplexity on the CPU-budget windows) is the
# prefill's, as in the HTML report.
EVALUATION_SCENARIOS = (None, "prefill512")


class NoSearchRecord(CompressbenchError):
    """A run saved without ``--search``."""


def run_search(run: Run) -> SearchRecord:
    """The run's search record; :class:`NoSearchRecord` or :class:`SearchRecordError` naming the file."""
    try:
        record = search_record(run.data.get("compressbench"))
    except SearchRecordError as exc:
        raise SearchRecordError(f"{run.path}: {exc}") from None
    if record is None:
        raise NoSearchRecord(f"{run.path}: no search record (compressbench.search): this run was not run with "
                             "--search; save one with pytest bench --search --max-drop 0.5 --benchmark-save=NAME")
    return record


def row_drop(row: ResultRow) -> float | None:
    """The row's accuracy drop in pp, or its perplexity rise in % (from the perplexities when not saved)."""
    if row.quality.drop is not None:
        return row.quality.drop
    ppl, base = row.quality.perplexity, row.quality.baseline_perplexity
    return None if ppl is None or not base else (ppl - base) / base * 100


def evaluation_row(rows: list[ResultRow], model: str, technique: str) -> ResultRow | None:
    """The run's row of ``model`` and ``technique`` that stands for its evaluation: one with a drop, the bs32
    row first, then the first saved."""
    mine = [r for r in rows if r.identity.model == model and r.identity.technique == technique]
    ranked = sorted(range(len(mine)), key=lambda i: (row_drop(mine[i]) is None,
                                                     mine[i].identity.scenario not in EVALUATION_SCENARIOS,
                                                     mine[i].identity.batch_size != EVALUATION_BATCH, i))
    return mine[ranked[0]] if ranked else None


@dataclasses.dataclass(frozen=True)
class Winner:
    """A technique the search handed to the run, its held-apart trial and its evaluation row (if the run has
    one), judged against the same limit."""

    model: str
    technique: str
    trial: Trial | None
    row: ResultRow | None
    goal: Goal

    @property
    def held_drop(self) -> float | None:
        return None if self.trial is None else self.trial.drop

    @property
    def held_pass(self) -> bool | None:
        return None if self.trial is None else self.trial.verdict == "pass"

    @property
    def eval_drop(self) -> float | None:
        return None if self.row is None else row_drop(self.row)

    @property
    def eval_pass(self) -> bool | None:
        return self.goal.passes(self.eval_drop)

    @property
    def agree(self) -> bool | None:
        return None if self.held_pass is None or self.eval_pass is None else self.held_pass == self.eval_pass

    @property
    def speed(self) -> tuple[float | None, bool]:
        """(speed ratio vs fp32, whether it is the run's paired one): the row's paired ratio, else the search's
        quick estimate."""
        paired = None if self.row is None else self.row.latency.speed_vs_fp32
        if paired and paired.get("ratio") is not None:
            return paired["ratio"], True
        return (None if self.trial is None else self.trial.speed_ratio), False

    @property
    def size_bytes(self) -> int | None:
        if self.row is not None and self.row.size.size_bytes is not None:
            return self.row.size.size_bytes
        return None if self.trial is None else self.trial.size_bytes


def winners(model: ModelSearch, goal: Goal, rows: list[ResultRow]) -> list[Winner]:
    return [Winner(model.name, t, model.trial_of(t), evaluation_row(rows, model.name, t), goal) for t in model.winners]


# ---------------------------------------------------------------------------------------------- text
def fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def interval(low, high) -> str:
    return "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"


def held_text(trial: Trial | None) -> str:
    return "n/a" if trial is None else fmt(trial.drop) + interval(trial.drop_low, trial.drop_high)


def eval_text(row: ResultRow | None) -> str:
    if row is None:
        return "no row"
    ci = row.quality.accuracy_drop_ci_pp
    return fmt(row_drop(row)) + (interval(*ci) if ci else "")


def speed_text(winner: Winner) -> str:
    ratio, paired = winner.speed
    return fmt(ratio) + ("" if paired or ratio is None else " (search est.)")


def goal_text(goal: Goal) -> str:
    what = "perplexity rise" if goal.limit_kind == "max_ppl_rise_pct" else f"{goal.metric} drop"
    budget = "none" if goal.budget_minutes is None else f"{goal.budget_minutes:g} min"
    return (f"{what} <= {goal.limit:g} {goal.unit} against fp32 on held-apart rows; objective: {goal.objective}; "
            f"budget: {budget}")


def short_rule(rule: str) -> str:
    """The rule's first sentence (the whole paragraph is in the HTML report and the saved record)."""
    first, dot, rest = rule.strip().partition(". ")
    return first + ("." if dot else "") + (" ..." if rest.strip() else "")


def totals_text(record: SearchRecord) -> str:
    share = record.cached_trials / record.trials if record.trials else 0.0
    plan = record.plan or {}
    planned = (f"; plan {plan.get('trials', '?')} trials, ~{fmt(plan.get('estimated_s'), '.1f', 1 / 60)} min"
               if plan else "")
    end = f"stopped early: {record.stopped}" if record.stopped else "ran to completion"
    return (f"{record.trials} trials ({record.cached_trials} cached, {share:.0%}) in {record.seconds / 60:.1f} min"
            f"{planned}; {end}")


def choice_lines(model: ModelSearch, unit: str) -> list[str]:
    lines = []
    for family, choice in model.choices.items():
        if choice.passed and choice.technique:
            lines.append(f"  {family}: {choice.technique} (knob {choice.knob}), drop {fmt(choice.drop)} {unit}")
        else:
            closest = choice.closest or {}
            near = (f"closest: {closest.get('technique')} (drop {fmt(closest.get('drop'))} {unit})" if closest
                    else "no trial to compare")
            lines.append(f"  {family}: none passes; {near}")
    return lines


def chain_lines(model: ModelSearch, unit: str) -> list[str]:
    return [f"  {name}: {chain.technique or 'none'}, {'passes' if chain.passed else 'fails'}, "
            f"drop {fmt(chain.drop)} {unit}" for name, chain in model.chains.items()]


def frontier_table(model: ModelSearch, goal: Goal, rows: list[ResultRow]) -> list[str]:
    body = []
    for technique in model.frontier:
        winner = Winner(model.name, technique, model.trial_of(technique), evaluation_row(rows, model.name, technique),
                        goal)
        trial = winner.trial
        batch = f" (bs{winner.row.identity.batch_size})" if winner.row is not None else ""
        body.append([winner.technique, "n/a" if trial is None else str(trial.knob), held_text(trial),
                     eval_text(winner.row) + batch, speed_text(winner), fmt(winner.size_bytes, ".1f", 2**-20)])
    header = ["technique", "knob", f"held-apart drop {goal.unit} [95%]", f"eval drop {goal.unit} [95%]",
              "speed x", "size MB"]
    return format_columns(header, body, left=2)


def trials_table(model: ModelSearch) -> list[str]:
    order = list(dict.fromkeys(t.family for t in model.trials))
    trials = sorted(model.trials, key=lambda t: order.index(t.family))  # stable: each family in the order tried
    body = [[t.family, str(t.knob), t.technique, str(t.rows), fmt(t.drop) + interval(t.drop_low, t.drop_high),
             "error" if t.error else t.verdict, "yes" if t.early else "", fmt(t.build_s, ".1f"),
             fmt(t.quality_s, ".1f"), "yes" if t.cached else ""] for t in trials]
    header = ["family", "knob", "technique", "rows", "drop [low, high]", "verdict", "early", "build s",
              "quality s", "cached"]
    lines = format_columns(header, body, left=3)
    lines += [f"  error in {t.technique}: {t.error}" for t in trials if t.error]
    return lines


def format_search(run: Run) -> list[str]:
    """The text ``python -m reports search`` prints for ``run`` (see the module docstring)."""
    record = run_search(run)
    rows = benchmark_rows(run)
    goal = record.goal
    lines = [f"{run.path}", f"goal: {goal_text(goal)}", f"rule: {short_rule(record.rule)}"]
    judged: list[Winner] = []
    for model in record.models.values():
        ref = model.reference
        held = model.held_apart
        lines += ["", f"== {model.name} ==",
                  f"held-apart rows: {held.get('rows', '?')} from {held.get('source', '?')} "
                  f"(checksum {held.get('checksum', '?')}); reference {ref.get('technique', 'fp32')}: "
                  f"quality {fmt(ref.get('quality'))}, latency {fmt(ref.get('latency_s'), '.1f', 1e3)} ms, "
                  f"size {fmt(ref.get('size_bytes'), '.1f', 2**-20)} MB",
                  f"frontier ({len(model.frontier)}):"]
        lines += ["  " + line for line in frontier_table(model, goal, rows)]
        lines += [f"trials ({len(model.trials)}):"] + ["  " + line for line in trials_table(model)]
        lines += ["choices:"] + choice_lines(model, goal.unit)
        if model.chains:
            lines += ["chains:"] + chain_lines(model, goal.unit)
        lines += fastest_lines(model, goal, rows)
        judged += winners(model, goal, rows)
    lines += ["", f"search: {totals_text(record)}"]
    if record.replay_file:
        lines.append(f"replay: pytest bench --techniques @{record.replay_file}")
    with_row = [w for w in judged if w.row is not None]
    lines.append(f"held-apart vs evaluation verdicts (limit {goal.limit:g} {goal.unit}):")
    for w in with_row:
        verdicts = (f"held-apart {held_text(w.trial)} {_verdict(w.held_pass)}; evaluation {eval_text(w.row)} "
                    f"(bs{w.row.identity.batch_size}) {_verdict(w.eval_pass)}")
        agreement = "n/a" if w.agree is None else "agree" if w.agree else "DISAGREE"
        lines.append(f"  {w.model} {w.technique}: {verdicts}: {agreement}")
    missing = [f"{w.model} {w.technique}" for w in judged if w.row is None]
    if missing:
        lines.append(f"  no evaluation row in this run: {', '.join(missing)}")
    disagreements = sum(w.agree is False for w in with_row)
    lines.append(f"{disagreements} disagreement(s) among {len(with_row)} winner(s) with an evaluation row")
    return lines


def fastest_lines(model: ModelSearch, goal: Goal, rows: list[ResultRow]) -> list[str]:
    """The search's answer against the fixed matrix, on the evaluation rows of this run: the fastest frontier
    member and the fastest fixed-matrix configuration whose evaluation drop is within the limit, by the paired
    speed ratio of the same scenario (bs32 where the run has it), and their ratio."""
    searched = set(model.winners) | {t.technique for t in model.trials}
    mine = [r for r in rows if r.identity.model == model.name and r.latency.speed_vs_fp32
            and r.latency.speed_vs_fp32.get("ratio") is not None and goal.passes(row_drop(r))]
    scenario = EVALUATION_BATCH if any(r.identity.batch_size == EVALUATION_BATCH for r in mine) else None
    mine = [r for r in mine if scenario is None or r.identity.batch_size == scenario]

    def fastest(candidates):
        return max(candidates, key=lambda r: r.latency.speed_vs_fp32["ratio"], default=None)

    front = fastest([r for r in mine if r.identity.technique in model.frontier])
    fixed = fastest([r for r in mine if r.identity.technique not in searched and r.identity.technique != "fp32"])

    def text(row):
        speed = row.latency.speed_vs_fp32
        ci = speed.get("ci95") or [None, None]
        return (f"{row.identity.technique} x{speed['ratio']:.2f} [{fmt(ci[0])}, {fmt(ci[1])}], evaluation drop "
                f"{fmt(row_drop(row))} {goal.unit}")

    lines = [f"fastest within {goal.limit:g} {goal.unit} on the evaluation rows (paired speed vs fp32"
             + (f", bs{scenario}" if scenario else "") + "):"]
    lines.append(f"  frontier: {text(front) if front else 'none of its members with a row is within the limit'}")
    lines.append(f"  fixed matrix: {text(fixed) if fixed else 'none in this run is within the limit'}")
    if front and fixed:
        ratio = front.latency.speed_vs_fp32["ratio"] / fixed.latency.speed_vs_fp32["ratio"]
        lines.append(f"  the frontier's fastest is {ratio:.2f}x the fixed matrix's fastest")
    return lines


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "fail"


# ---------------------------------------------------------------------------------------------- HTML report
def agreement_table(model: ModelSearch, goal: Goal, rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of each winner's held-apart drop and verdict beside its evaluation drop and verdict."""
    header = ["technique", f"held-apart drop {goal.unit} [95%]", "held-apart", f"eval drop {goal.unit} [95%]",
              "eval", "verdicts"]
    body = []
    for w in winners(model, goal, rows):
        batch = f" (bs{w.row.identity.batch_size})" if w.row is not None else ""
        body.append([w.technique, held_text(w.trial), _verdict(w.held_pass), eval_text(w.row) + batch,
                     _verdict(w.eval_pass), "n/a" if w.agree is None else "agree" if w.agree else "DISAGREE"])
    return header, body


def frontier_figure(model: ModelSearch, goal: Goal, rows: list[ResultRow]):
    """Each technique tried (its deciding trial) at x = held-apart drop, y = speed ratio vs fp32 (the run's paired
    ratio where it has a row, else the search's estimate), marker area = size; the frontier solid and labelled,
    the dominated faded; a dashed line at the limit. None when no trial has a drop and a speed."""
    import plotly.graph_objects as go

    points = []
    for technique in dict.fromkeys(t.technique for t in model.trials):
        w = Winner(model.name, technique, model.trial_of(technique), evaluation_row(rows, model.name, technique), goal)
        ratio, paired = w.speed
        if w.held_drop is None or ratio is None:
            continue
        hover = (f"{technique}<br>held-apart drop {held_text(w.trial)} {goal.unit} ({w.trial.verdict})"
                 f"<br>speed x{ratio:.2f} ({'paired, the run' if paired else 'search estimate'})"
                 f"<br>size {fmt(w.size_bytes, '.1f', 2**-20)} MB<br>evaluation drop {eval_text(w.row)}")
        # every point's size from the search's own figure, so markers compare like with like
        size = (w.trial.size_bytes if w.trial.size_bytes is not None else w.size_bytes) or 0
        points.append((technique in model.frontier, w, ratio, hover, size / 2**20))
    if not points:
        return None
    biggest = max(p[4] for p in points) or 1
    fig = go.Figure()
    for on_front, name, opacity in ((False, "dominated or failed", 0.25), (True, "frontier", 0.9)):
        shown = [p for p in points if p[0] == on_front]
        if not shown:
            continue
        fig.add_trace(go.Scatter(
            x=[p[1].held_drop for p in shown], y=[p[2] for p in shown],
            mode="markers+text" if on_front else "markers", name=name,
            text=[p[1].technique for p in shown] if on_front else None, textposition="top center",
            textfont={"size": 10}, hovertext=[p[3] for p in shown], hoverinfo="text",
            marker={"size": [p[4] for p in shown], "sizemode": "area",
                    "sizeref": 2 * biggest / 40**2, "sizemin": 5, "opacity": opacity,
                    "color": "crimson" if on_front else "gray"},
        ))
    fig.add_vline(x=goal.limit, line_dash="dash", line_color="gray",
                  annotation_text=f"limit {goal.limit:g} {goal.unit}", annotation_position="bottom right")
    fig.update_layout(
        title=f"{model.name}: speed vs fp32 against held-apart drop (marker area = size; frontier solid and "
              "labelled, the rest faded)",
        xaxis_title=f"held-apart drop {goal.unit} vs fp32", yaxis_title="speed vs fp32 x (paired where the run "
                                                                         "has the row, else the search's estimate)",
        legend={"itemsizing": "constant"}, height=520,
    )
    return fig


def search_sections(run: Run) -> list[tuple[ModelSearch, SearchRecord, list[ResultRow]]]:
    """(model search, record, the run's rows) per model of a run's search record; none for a run without one."""
    if (run.data.get("compressbench") or {}).get(SEARCH_KEY) is None:
        return []
    record = run_search(run)  # errors name the file
    rows = benchmark_rows(run)
    return [(model, record, rows) for model in record.models.values()]
