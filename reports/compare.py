"""Every metric of two runs side by side, and the regression rule shared with ``--benchmark-compare``.

A configuration is matched across runs by its id (``model-technique-tier-bsN``). A metric
regressed when it moved the wrong way by more than its threshold, and, where the rows carry the
raw data, when that move is also significant (compressors.records.stats; the decision record
docs/decisions/verdict-statistics.md says why):

* latency: on the paired speed ratios vs fp32 where both rows have them (else the per-round
  timings), one-sided Mann-Whitney U, alpha 0.01, *and* beyond the between-run spread: the move
  must stand out of how far the same comparison's other configurations moved
  (:func:`compressors.records.stats.between_run_spread`), because blocks taken seconds apart within one run
  cannot see how much the machine's state moves a ratio between runs minutes apart; a timing taken
  while another process competed for the CPU (``contention.contended``) is *inconclusive*, never a
  regression; with ``confirm`` (a later run that re-timed the flagged configurations), a latency
  regression stands only when the re-timing is flagged against A by the same test
  (:func:`confirm_latency`), because some unchanged configurations have a rare run that no spread
  of one pair of runs can tell from a slowdown;
* accuracy: exact McNemar test on the per-sentence correctness of the same dev sentences, alpha 0.05.

Rows without the raw data (runs saved before schema 3) fall back to the threshold alone, and the
comparison says so.

Which metrics are compared, with which threshold option, default and test, is declared once per metric in
:mod:`compressors.records.metric_table` (its ``compare``): :func:`compared_metrics` reads it, and
``python -m reports compare --help`` lists the options with their defaults. Inside pytest
(``--benchmark-compare``), ``--benchmark-compare-fail`` owns the medians; latency is judged once the run
has finished (reports/pytest_plugin.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from compressors import CompressbenchError
from compressors.records.metric_table import compare_options, compared
from compressors.records.results import ResultRow
from compressors.records.stats import (
    ACCURACY_ALPHA,
    LATENCY_ALPHA,
    SPREAD_FAMILY_ALPHA,
    between_run_spread,
    latency_shift,
    paired_accuracy_difference,
    unpack_bools,
)
from reports.runs import Run, benchmark_rows


class BadThreshold(CompressbenchError):
    pass


class Thresholds:
    """How far each compared metric may move the wrong way before it is a regression, by threshold name
    (``Thresholds(accuracy_pp=1.0)``, read as ``thresholds.accuracy_pp``): in the metric's own unit for an
    absolute metric (accuracy: pp), else in percent of the earlier value. Names and defaults come from the
    table of metrics; an unknown name or a value that is not a number >= 0 raises :class:`BadThreshold`."""

    def __init__(self, **limits: float):
        defaults = {m.compare.threshold: m.compare.default for m in compared()}
        unknown = sorted(set(limits) - set(defaults))
        if unknown:
            raise BadThreshold(f"unknown threshold {', '.join(unknown)}; thresholds: {', '.join(defaults)}")
        values = {**defaults, **limits}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BadThreshold(f"threshold {name}={value!r}: must be a number >= 0")
        object.__setattr__(self, "_limits", values)

    def __getattr__(self, name: str) -> float:
        limits = self.__dict__.get("_limits", {})
        if name in limits:
            return limits[name]
        raise AttributeError(f"no threshold {name!r}; thresholds: {', '.join(limits)}")

    def __setattr__(self, name, value):
        raise AttributeError("Thresholds are frozen")

    def __eq__(self, other) -> bool:
        return isinstance(other, Thresholds) and self._limits == other._limits

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._limits.items())))

    def __repr__(self) -> str:
        return "Thresholds(" + ", ".join(f"{k}={v!r}" for k, v in self._limits.items()) + ")"


def add_threshold_options(add, fields=None) -> None:
    """Declare the --compare-* options through ``add`` (argparse's ``add_argument``), the same options as the
    suite's options table has (:func:`compressors.records.metric_table.compare_options`), or only those for
    threshold ``fields``; latency's last."""
    for option in compare_options():
        if fields is None or option.name.removeprefix("compare_") in fields:
            add(option.flag, type=float, default=option.default,
                help=f"{option.help.replace('%', '%%')} (default {option.default:g})")


def thresholds_from_options(get, fields=None) -> Thresholds:
    """A :class:`Thresholds` from option values; ``get(field)`` returns one (others keep their default)."""
    return Thresholds(**{m.compare.threshold: get(m.compare.threshold) for m in compared()
                         if fields is None or m.compare.threshold in fields})


@dataclasses.dataclass(frozen=True)
class Metric:
    """A compared metric as the comparison uses it (from :class:`compressors.records.metric_table.Metric`)."""

    name: str  # its label in the comparison
    value: Callable[[ResultRow], float | None]
    threshold: str  # Thresholds name
    higher_is_better: bool
    absolute: bool  # threshold in the metric's own unit (pp) rather than percent
    show: Callable[[float], str]
    test: str = "threshold"  # threshold, mcnemar, latency (compressors.records.metric_table.Compared)

    @property
    def timing(self) -> bool:
        return self.test == "latency"


# What a regression needs beyond the threshold, per test of compressors.records.metric_table.Compared.
TEST_NOTES = {
    "threshold": "",
    "mcnemar": f"exact McNemar test on the sentences that changed, alpha {ACCURACY_ALPHA}",
    "latency": f"a rank test on the paired block ratios, alpha {LATENCY_ALPHA}, and beyond the between-run spread; "
               "a contended timing is `inconclusive`, never a regression; inside pytest, judged at the end of the "
               "session and confirmed by re-timing",
}


def compared_metrics() -> list[Metric]:
    """Every metric of the table of metrics that compare judges, in its order."""
    return [Metric(m.compare.label, m.value, m.compare.threshold, m.higher_is_better, m.compare.absolute,
                   m.compare.show, m.compare.test) for m in compared()]


@dataclasses.dataclass(frozen=True)
class Change:
    config: str
    metric: Metric
    before: float | None
    after: float | None
    regressed: bool
    limit: float
    note: str | None = None  # the test behind the verdict, or why it is inconclusive
    cleared: bool = False  # flagged, then not confirmed by a re-timing (confirm_latency)
    confirmed: bool = False  # flagged, and flagged again by a re-timing (confirm_latency)

    @property
    def delta(self) -> str:
        if self.before is None or self.after is None:
            return "n/a"
        if self.metric.absolute:
            return f"{self.after - self.before:+.2f} pp"
        if self.before == 0:
            return "n/a"
        return f"{(self.after - self.before) / self.before * 100:+.1f}%"

    @property
    def limit_text(self) -> str:
        if self.metric.absolute:
            return f"-{self.limit:g} pp" if self.metric.higher_is_better else f"+{self.limit:g} pp"
        return f"+{self.limit:g}%"

    def describe(self) -> str:
        show = self.metric.show
        note = f"; {self.note}" if self.note else ""
        return (f"{self.metric.name} {show(self.before)} -> {show(self.after)} ({self.delta}, "
                f"threshold {self.limit_text}{note})")


def paired_blocks(row: ResultRow) -> tuple[list | None, str | None]:
    """The per-block paired speed ratios a row's latency is judged by across runs: against fp32 for a
    technique, against the fp32 GEMM reference for the fp32 baseline itself; (None, None) without them."""
    paired = row.latency.speed_vs_fp32 or {}
    reference = paired.get("reference") or {}
    if reference.get("block_ratios"):
        return reference["block_ratios"], "its speed vs the fp32 GEMM reference"
    if paired.get("block_ratios"):
        return paired["block_ratios"], "its speed vs fp32"
    return None, None


def paired_log_change(before: ResultRow, after: ResultRow) -> float | None:
    """log(speed ratio before / after) of a configuration both runs paired the same way (> 0: it got
    slower against its baseline), or None: no blocks on one side, or a contended timing."""
    if before.latency.contended or after.latency.contended:
        return None
    (blocks_a, what_a), (blocks_b, what_b) = paired_blocks(before), paired_blocks(after)
    if not (blocks_a and blocks_b) or what_a != what_b:
        return None
    return math.log(float(np.median(blocks_a)) / float(np.median(blocks_b)))


def latency_spread(pairs) -> dict | None:
    """The between-run spread of the paired speed ratios over ``pairs`` of (before, after) rows
    (:func:`compressors.records.stats.between_run_spread`), or None when too few rows were paired in both."""
    changes = [change for before, after in pairs if (change := paired_log_change(before, after)) is not None]
    return between_run_spread(changes)


def _spread_text(spread: dict) -> str:
    return (f"{(math.exp(spread['bar']) - 1) * 100:.1f}% = {spread['z']:.2f} x the spread of "
            f"{spread['rows']} paired configurations")


def _latency_test(before: ResultRow, after: ResultRow, beyond: bool, limit: float,
                  spread: dict | None = None) -> tuple[bool, str | None]:
    """(regressed, note) for a latency move: judged on the paired speed ratios where both rows have
    them (a whole-machine slowdown moves both sides of a pair alike), else on the medians; always
    significant (Mann-Whitney, alpha 0.01), uncontended and, for paired ratios with a ``spread`` of
    the whole comparison, beyond that between-run spread; or it says why not."""
    contended = [label for label, row in (("before", before), ("after", after)) if row.latency.contended]
    if contended:
        return False, f"inconclusive: timing contended ({', '.join(contended)})"
    (blocks_a, what), (blocks_b, _) = paired_blocks(before), paired_blocks(after)
    if blocks_a and blocks_b and paired_blocks(before)[1] == paired_blocks(after)[1]:
        shift = latency_shift(blocks_b, blocks_a)  # a lower speed ratio after = slower
        slower = (shift["ratio"] - 1) * 100
        significant = shift["p"] < LATENCY_ALPHA
        paired_beyond = slower > limit + 1e-9
        note = (f"paired: {what} fell {slower:+.1f}%, Mann-Whitney p={shift['p']:.3g} over "
                f"{shift['rounds'][1]}/{shift['rounds'][0]} blocks")
        if paired_beyond and not significant:
            note += f" >= {LATENCY_ALPHA}: not significant"
        stands_out = True
        if spread is not None:
            stands_out = paired_log_change(before, after) > spread["bar"] + 1e-12
            if paired_beyond and significant:
                note += ("; beyond" if stands_out else "; within") + f" the between-run spread ({_spread_text(spread)})"
        elif paired_beyond and significant:
            note += "; between-run spread unknown (too few paired configurations in common)"
        if beyond and not paired_beyond:
            note += "; the median moved with the machine, not against fp32"
        return paired_beyond and significant and stands_out, note
    if not (before.latency.round_s and after.latency.round_s):
        return beyond, "threshold only (no per-round timings saved)"
    shift = latency_shift(before.latency.round_s, after.latency.round_s)
    significant = shift["p"] < LATENCY_ALPHA
    note = f"Mann-Whitney p={shift['p']:.3g}, rounds {shift['rounds'][0]}/{shift['rounds'][1]}"
    if beyond and not significant:
        note += f" >= {LATENCY_ALPHA}: not significant"
    return beyond and significant, note


def _accuracy_test(before: ResultRow, after: ResultRow, beyond: bool) -> tuple[bool, str | None]:
    a, b = before.quality.per_example_correct, after.quality.per_example_correct
    same = (a and b and a.get("n") == b.get("n")
            and (before.quality.eval or {}).get("checksum") == (after.quality.eval or {}).get("checksum"))
    if not same:
        return beyond, "threshold only (no per-sentence correctness on the same sentences)"
    paired = paired_accuracy_difference(unpack_bools(a["data"], a["n"]), unpack_bools(b["data"], b["n"]))
    significant = paired["mcnemar_p"] < ACCURACY_ALPHA
    note = (f"McNemar p={paired['mcnemar_p']:.3g} ({paired['reference_only']} sentences lost, "
            f"{paired['other_only']} gained)")
    if beyond and not significant:
        note += f" >= {ACCURACY_ALPHA}: not significant"
    return beyond and significant, note


def _moved(metric: Metric, old: float, new: float) -> float:
    """How far a metric moved the wrong way: in its own unit (absolute metrics) or percent of ``old``."""
    worse = (old - new) if metric.higher_is_better else (new - old)
    if metric.absolute:
        return worse
    return 0.0 if old == 0 else worse / old * 100


def metric_changes(
    config: str, before: ResultRow, after: ResultRow, thresholds: Thresholds, timing: bool = True,
    spread: dict | None = None,
) -> list[Change]:
    """Each metric present in ``before`` or ``after``, with whether it regressed beyond ``thresholds``
    (latency: also beyond the comparison's between-run ``spread``, see :func:`latency_spread`)."""
    changes = []
    for metric in compared_metrics():
        if metric.timing and not timing:
            continue
        old, new = metric.value(before), metric.value(after)
        if old is None and new is None:
            continue
        limit = getattr(thresholds, metric.threshold)
        regressed, note = False, None
        if old is not None and new is not None:
            regressed = _moved(metric, old, new) > limit + 1e-9
            if metric.test == "latency":
                regressed, note = _latency_test(before, after, regressed, limit, spread)
            elif metric.test == "mcnemar":
                regressed, note = _accuracy_test(before, after, regressed)
        changes.append(Change(config, metric, old, new, regressed, limit, note))
    return changes


@dataclasses.dataclass(frozen=True)
class Comparison:
    before: Run
    after: Run
    changes: list[Change]
    only_before: list[str]
    only_after: list[str]
    machine_warning: str | None
    spread: dict | None = None  # between-run spread of the paired speed ratios (latency_spread)
    confirm: Run | None = None  # the run that re-timed the flagged configurations (confirm_latency)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]


MACHINE_KEYS = (("node",), ("machine",), ("cpu", "brand_raw"), ("cpu", "count"), ("compressbench", "hardware"),
                ("compressbench", "malloc", "mode"))


def _machine_summary(run: Run) -> dict:
    summary = {}
    for path in MACHINE_KEYS:
        value = run.machine
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if path[-1] == "mode" and value is None:
            value = "as-is"  # runs saved before --malloc existed ran on glibc's dynamic thresholds
        summary[".".join(path)] = value
    return summary


def machine_difference(a: Run, b: Run) -> str | None:
    """A warning when the two runs were measured on different machines (timings not comparable), else None."""
    sa, sb = _machine_summary(a), _machine_summary(b)
    differ = [f"{k}: {sa[k]!r} vs {sb[k]!r}" for k in sa if sa[k] != sb[k]]
    if not differ:
        return None
    return (
        f"{a.label} and {b.label} come from different machines ({'; '.join(differ)}): "
        "timings are not comparable; compared anyway"
    )


class NothingToCompare(CompressbenchError):
    """Two runs that cannot be compared: no configuration in common, or one of them is partial."""


def confirm_latency(change: Change, before: ResultRow, confirm: ResultRow | None, confirm_label: str,
                    spread: dict | None, baseline: ResultRow | None = None, baseline_label: str | None = None,
                    before_label: str = "A") -> Change:
    """A latency regression of A -> B checked on a later re-timing C of B's code: it stands when
    A -> C is flagged by the same test (threshold, Mann-Whitney, beyond the A -> B between-run
    ``spread``: C alone usually holds too few configurations for its own), and, given a re-timing
    A2 of A's code (``baseline``), when A2 -> C is flagged too; otherwise B's run (or A's) was a rare
    one and the regression is cleared, saying so. Not re-timed in C, or C contended: it stands,
    unconfirmed."""
    if confirm is None:
        return dataclasses.replace(change, note=f"{change.note}; not re-timed in {confirm_label}: unconfirmed")
    if confirm.latency.contended:
        return dataclasses.replace(change, note=f"{change.note}; the re-timing in {confirm_label} was contended "
                                                "(another process competed for the CPU): unconfirmed")
    limit = change.limit
    checks = [(before, before_label)] + ([(baseline, baseline_label)] if baseline is not None else [])
    notes = []
    for reference, label in checks:
        old, new = reference.latency.median_s, confirm.latency.median_s
        beyond = old is not None and new is not None and _moved(change.metric, old, new) > limit + 1e-9
        again, note = _latency_test(reference, confirm, beyond, limit, spread)
        notes.append(f"against {label}: {note}")
        if not again:
            cleared = f"NOT confirmed by {confirm_label} ({'; '.join(notes)}): a rare run, not a regression"
            return dataclasses.replace(change, regressed=False, cleared=True, note=f"{change.note}; {cleared}")
    return dataclasses.replace(change, confirmed=True,
                               note=f"{change.note}; confirmed by {confirm_label} ({'; '.join(notes)})")


IN_RUN_RETIMING = "B's re-timing at the end of its session"


def in_run_retiming(change: Change, before: ResultRow, after: ResultRow, before_label: str,
                    spread: dict | None) -> Change:
    """A latency regression of A -> B judged on the re-timing B's own session made of it against A
    (``extra_info.retimed``, written under ``pytest --benchmark-compare``): the verdict that run
    reached, reached again. Left as it is when B holds no re-timing against this A."""
    retimed = after.extra.get("retimed") or {}
    if retimed.get("against") != before_label:
        return change
    if "speed_vs_fp32" not in retimed:  # the re-timing failed: the regression stands, unconfirmed
        return dataclasses.replace(change, note=f"{change.note}; {IN_RUN_RETIMING} failed "
                                                f"({retimed.get('error')}): unconfirmed")
    confirm = after.replace(latency={"speed_vs_fp32": retimed["speed_vs_fp32"],
                                     "contention": retimed.get("contention")})
    return confirm_latency(change, before, confirm, IN_RUN_RETIMING, spread, before_label=before_label)


def compare_runs(before: Run, after: Run, thresholds: Thresholds = Thresholds(),
                 allow_partial: bool = False, confirm: Run | None = None,
                 confirm_baseline: Run | None = None) -> Comparison:
    """Every metric of every configuration both runs have. Raises :class:`NothingToCompare` when they
    share none (a comparison that checks nothing must not read as "no regressions"), or when one is
    partial and ``allow_partial`` is not given. ``confirm``: a later run that re-timed configurations
    (typically those flagged); a latency regression then stands only if confirmed
    (:func:`confirm_latency`), against ``confirm_baseline`` too when given (a re-timing of A's code).
    Without ``confirm``, B's own end-of-session re-timings against A are used where it has them
    (:func:`in_run_retiming`)."""
    if confirm_baseline is not None and confirm is None:
        raise NothingToCompare(f"{confirm_baseline.label}: a re-timing of A's code needs the re-timing of B's code "
                               "(--confirm) to be checked against")
    retimings = [run for run in (confirm, confirm_baseline) if run is not None]
    seen = {before.path.resolve(), after.path.resolve()}
    for run in retimings:
        if run.path.resolve() in seen:
            raise NothingToCompare(f"{run.label} is one of the compared runs: re-time the flagged configurations "
                                   "in a new run to confirm them")
        seen.add(run.path.resolve())
    for run in (before, after):
        if run.partial and not allow_partial:
            raise NothingToCompare(f"{run.label} is a partial run ({run.partial}): it is not a complete baseline; "
                                   "pass --allow-partial to compare the configurations it has")
    rows_a = {r.config_id: r for r in benchmark_rows(before)}
    rows_b = {r.config_id: r for r in benchmark_rows(after)}
    if not rows_a.keys() & rows_b.keys():
        raise NothingToCompare(f"{before.label} and {after.label} have no configuration in common "
                               f"({len(rows_a)} and {len(rows_b)} configurations): nothing was compared")
    common = sorted(rows_a.keys() & rows_b.keys())
    spread = latency_spread((rows_a[config], rows_b[config]) for config in common)
    changes = []
    for config in common:
        changes.extend(metric_changes(config, rows_a[config], rows_b[config], thresholds, spread=spread))
    if confirm is None:  # B's own re-timings against A (pytest --benchmark-compare, reports/pytest_plugin.py)
        changes = [in_run_retiming(c, rows_a[c.config], rows_b[c.config], before.label, spread)
                   if c.regressed and c.metric.timing else c for c in changes]
    else:
        rows_c = {r.config_id: r for r in benchmark_rows(confirm)}
        rows_a2 = {r.config_id: r for r in benchmark_rows(confirm_baseline)} if confirm_baseline is not None else {}
        changes = [confirm_latency(c, rows_a[c.config], rows_c.get(c.config), confirm.label, spread,
                                   rows_a2.get(c.config), confirm_baseline.label if confirm_baseline else None,
                                   before.label)
                   if c.regressed and c.metric.timing else c for c in changes]
    return Comparison(
        before,
        after,
        changes,
        sorted(rows_a.keys() - rows_b.keys()),
        sorted(rows_b.keys() - rows_a.keys()),
        next((warning for warning in (machine_difference(before, after),
                                      *(machine_difference(after, run) for run in retimings)) if warning), None),
        spread,
        confirm,
    )


def retime_selection(comparison: Comparison) -> str:
    """The ``pytest -k`` expression that selects the configurations flagged slower (``""``: none)."""
    slower = sorted({c.config for c in comparison.regressions if c.metric.timing and not c.confirmed})
    return " or ".join(f"[{config}]" for config in slower)


def format_comparison(comparison: Comparison) -> list[str]:
    a, b = comparison.before.label, comparison.after.label
    width = max([len("configuration"), *(len(c.config) for c in comparison.changes)])
    lines = [f"{'configuration':<{width}}  {'metric':<15} {a:>16} {b:>16} {'delta':>10}  verdict"]
    last = None
    for change in comparison.changes:
        show = change.metric.show
        before = "n/a" if change.before is None else show(change.before)
        after = "n/a" if change.after is None else show(change.after)
        verdict = f"REGRESSED (threshold {change.limit_text})" if change.regressed else ""
        if change.note and (change.regressed or "inconclusive" in change.note or "not significant" in change.note):
            verdict = f"{verdict} {change.note}".strip()
        config = change.config if change.config != last else ""
        last = change.config
        lines.append(
            f"{config:<{width}}  {change.metric.name:<15} {before:>16} {after:>16} {change.delta:>10}  {verdict}"
        )
    for label, configs in ((a, comparison.only_before), (b, comparison.only_after)):
        if configs:
            lines.append(f"only in {label} ({len(configs)}): {', '.join(configs)}")
    spread = comparison.spread
    if spread is not None:
        lines.append(
            f"paired speed vs fp32 moved by a median {(math.exp(-spread['center']) - 1) * 100:+.1f}% over "
            f"{spread['rows']} configurations paired in both runs (robust sd {spread['scale'] * 100:.1f}%); "
            f"a latency regression must also be more than {(math.exp(spread['bar']) - 1) * 100:.1f}% slower against it "
            f"({spread['z']:.2f} sd, family alpha {SPREAD_FAMILY_ALPHA})")
    regressions = comparison.regressions
    if regressions:
        lines.append(f"{len(regressions)} regression(s) in {len({c.config for c in regressions})} configuration(s):")
        lines.extend(f"  {c.config}: {c.describe()}" for c in regressions)
    else:
        lines.append("no regressions beyond the thresholds")
    cleared = [c for c in comparison.changes if c.cleared]
    if cleared:
        where = f"the re-timing in {comparison.confirm.label}" if comparison.confirm else IN_RUN_RETIMING
        lines.append(f"cleared by {where} ({len(cleared)}): " + ", ".join(c.config for c in cleared))
    selection = retime_selection(comparison)
    if selection and comparison.confirm is None:
        lines.append(
            f"latency regressions are single runs: an unchanged configuration has a rare run now and then "
            f"(docs/verdicts.md, A/A runs). Re-time them: pytest bench -k \"{selection}\" --benchmark-save=confirm, "
            f"then "
            f"python -m reports compare {a} {b} --confirm confirm; a rare run of {a} (too fast) would be confirmed "
            f"too: re-time {a}'s code likewise (--benchmark-save=confirm-base) and add --confirm-baseline confirm-base")
    inconclusive = sorted({c.config for c in comparison.changes if c.note and c.note.startswith("inconclusive")})
    if inconclusive:
        lines.append(f"inconclusive timings (another process competed for the CPU) in {len(inconclusive)} "
                     f"configuration(s): {', '.join(inconclusive)}; rerun them on a quiet machine")
    return lines
