"""The search: the decision rule, bisection over a monotone knob, chains, the frontier and the record.

The engine knows no model and no library: a *runner* (:class:`compressors.search.runner.TrialRunner`, or a
fake in the unit tests) turns a technique name into a :class:`Candidate` (its per-unit held-apart scores,
loaded lazily, and its speed, size and memory), and the engine decides. The rule, also saved with every
search (:data:`RULE`):

* a trial's drop is paired: per held-apart row, fp32's correctness minus the trial's (percentage points of
  accuracy), or per held-apart window, the trial's mean NLL minus fp32's (a perplexity rise in %, through
  exp); its interval is the normal one on the mean paired difference, whose variance for accuracy counts one
  pseudo pair of rows that disagree (one each way), so that a subsample where the two agree on every row is
  not taken for certainty;
* it is judged on a growing subsample (256, 512, then all 1,000 rows; 8, 16, then 32 windows): at each look
  it **passes** when the interval's upper end is within the limit and **fails** when its lower end is beyond
  it (stopping early), with z = 2.128 at every look (a one-sided 95% level shared by three looks,
  Bonferroni); where the last look's interval still straddles the limit it **fails**: not shown to be
  within the limit (``--search-rule confident``, the default). ``--search-rule point`` lets the point
  estimate decide there instead: more choices, and more of them missing the limit on the evaluation rows;
* a knob is monotone (more compression, no less drop): it is bisected for the most compressed passing
  value, which is the family's choice (a family with a second, discrete knob is bisected once per value of
  it, and the best of those choices on the objective is taken); a trial that fails to build counts as
  failing. A family where nothing passes keeps its closest trial (the smallest drop);
* the chosen structural knob (layers dropped, a student's depth, pruning) is chained with each quantizing
  family, whose knob (layers kept float) is bisected again on the chain: drops add up;
* the frontier: the passing trials no other passing trial beats on drop, objective and size at once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from compressors import CompressbenchError
from compressors.search.space import Family

Z_LOOK = 2.128  # the one-sided 95% level shared by three looks: z of 1 - 0.05 / 3
RULES = ("confident", "point")
RECORD_VERSION = 1
OBJECTIVES = ("latency", "size", "memory")
RULE = __doc__[__doc__.index("* a trial's"):].strip()


class SearchStopped(CompressbenchError):
    """The search's time budget ran out (the search keeps what it has)."""


@dataclasses.dataclass(frozen=True)
class Goal:
    """What the user asked for: a limit on the drop, and what to minimise within it.

    Args:
        limit_kind: ``max_drop_pp`` (classifiers: accuracy drop, percentage points) or ``max_ppl_rise_pct``
            (causal LMs: perplexity rise, %).
        limit: the largest drop accepted.
        objective: ``latency``, ``size`` or ``memory``.
        budget_minutes: stop searching after this long (None: no limit).
        rule: ``confident`` (a trial passes only when its interval shows it within the limit) or ``point``
            (where the last look's interval straddles the limit, the point estimate decides).
    """

    limit_kind: str
    limit: float
    objective: str = "latency"
    budget_minutes: float | None = None
    rule: str = "confident"

    @property
    def metric(self) -> str:
        return "perplexity" if self.limit_kind == "max_ppl_rise_pct" else "accuracy_pct"

    def to_dict(self) -> dict:
        return {"limit_kind": self.limit_kind, "limit": self.limit, "metric": self.metric,
                "objective": self.objective, "budget_minutes": self.budget_minutes, "rule": self.rule}


def paired_drop(reference: np.ndarray, trial: np.ndarray, limit_kind: str, z: float = Z_LOOK):
    """``(drop, low, high)`` of ``trial`` against ``reference`` on the same units: accuracy points lost
    (scores are per-row correctness, 0 or 1) or the perplexity rise in % (scores are per-window mean NLL)."""
    n = len(trial)
    if n == 0 or len(reference) < n:
        raise ValueError(f"paired drop of {n} trial units against {len(reference)} reference units")
    if limit_kind == "max_ppl_rise_pct":
        d = np.asarray(trial, float) - np.asarray(reference[:n], float)
    else:
        d = (np.asarray(reference[:n], float) - np.asarray(trial, float)) * 100.0
    mean = float(d.mean())
    if limit_kind != "max_ppl_rise_pct":  # one pseudo pair of disagreeing rows, one each way (see RULE)
        d = np.concatenate([d, [100.0, -100.0]])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    low, high = mean - z * se, mean + z * se
    if limit_kind == "max_ppl_rise_pct":
        def rise(x):
            return (math.exp(min(x, 50.0)) - 1.0) * 100.0
        return rise(mean), rise(low) if math.isfinite(low) else -100.0, rise(high) if math.isfinite(high) else math.inf
    return mean, low, high


@dataclasses.dataclass
class Decision:
    verdict: str  # "pass" | "fail"
    rows: int
    drop: float
    low: float
    high: float
    early: bool
    decided_by: str  # "interval" | "point estimate" | "not shown within the limit"


def decide(reference: np.ndarray, scores_at: Callable[[int], np.ndarray], looks: tuple[int, ...], goal: Goal,
           z: float = Z_LOOK) -> Decision:
    """Judge one trial by the rule (see the module docstring) on the growing subsample ``looks``."""
    for index, n in enumerate(looks):
        drop, low, high = paired_drop(reference, scores_at(n), goal.limit_kind, z)
        last = index == len(looks) - 1
        if high <= goal.limit or low > goal.limit:
            return Decision("pass" if high <= goal.limit else "fail", n, drop, low, high, not last, "interval")
        if last and goal.rule == "point":
            return Decision("pass" if drop <= goal.limit else "fail", n, drop, low, high, False, "point estimate")
        if last:
            return Decision("fail", n, drop, low, high, False, "not shown within the limit")
    raise ValueError("no looks")


@dataclasses.dataclass
class Candidate:
    """One trial's technique as the runner prepared it.

    Args:
        technique: its name (a chain for a chain trial).
        scores_at: per-unit held-apart scores on the first ``n`` units (evaluated on demand).
        figures: ``figures()`` -> speed_ratio (fp32 time / its time, a quick estimate), size_bytes,
            memory_bytes (None where not measured).
        build_s: seconds its build (or cache load) took.
        cached: every stage came from the cache.
        finish: called once after the decision (stores the scores); returns ``{"quality_s": .., "cached_scores": ..}``.
        error: why it could not be built or loaded (then nothing else is set).
    """

    technique: str
    scores_at: Callable[[int], np.ndarray] | None = None
    figures: Callable[[], dict] | None = None
    build_s: float = 0.0
    cached: bool = False
    finish: Callable[[], dict] | None = None
    error: str | None = None


class Runner:
    """What the engine needs from a runner (:class:`compressors.search.runner.TrialRunner` implements it)."""

    looks: tuple[int, ...]
    reference: np.ndarray  # fp32's scores on every held-apart unit

    def candidate(self, technique: str) -> Candidate:
        raise NotImplementedError

    def layers_after(self, technique: str, layers: int) -> int:
        raise NotImplementedError


def objective_value(trial: dict, objective: str) -> float:
    """Smaller is better: minus the speed ratio (latency), bytes on disk (size), peak bytes (memory)."""
    if objective == "latency":
        ratio = trial.get("speed_ratio")
        return -ratio if ratio is not None else math.inf
    value = trial.get("size_bytes" if objective == "size" else "memory_bytes")
    return float(value) if value is not None else math.inf


def frontier(trials: list[dict], objective: str) -> list[str]:
    """The passing trials no other passing trial beats on drop, objective and size at once (ties kept)."""
    passing = [t for t in trials if t.get("verdict") == "pass" and t.get("error") is None]
    points = {t["technique"]: (t["drop"], objective_value(t, objective), float(t.get("size_bytes") or math.inf))
              for t in passing}

    def dominated(p):
        return any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points.values())

    return [name for name, point in points.items() if not dominated(point)]


class Search:
    """The search of one model: its families, then chains, with one runner, a goal and a clock.

    Args:
        model: the model's name (records and messages).
        runner: see :class:`Runner`.
        goal: see :class:`Goal`.
        layers: the model's transformer layers.
        deadline: ``time.monotonic()`` value after which no new trial starts (None: none).
        progress: called with one line per trial.
    """

    def __init__(self, model: str, runner: Runner, goal: Goal, layers: int, deadline: float | None = None,
                 progress: Callable[[str], None] = lambda line: None, clock: Callable[[], float] = time.monotonic):
        self.model, self.runner, self.goal, self.layers = model, runner, goal, layers
        self.deadline, self.progress, self.clock = deadline, progress, clock
        self.trials: list[dict] = []
        self.choices: dict[str, dict] = {}
        self.chains: dict[str, dict] = {}
        self.skipped: dict[str, str] = {}
        self.stopped: str | None = None
        self._partial: dict | None = None  # a family's best passing trial when the budget stopped it midway

    # ------------------------------------------------------------------ one trial
    def trial(self, family: Family, knob, technique: str, parent: str | None = None) -> dict:
        known = next((t for t in self.trials if t["technique"] == technique), None)
        if known is not None:
            return known
        if self.deadline is not None and self.clock() >= self.deadline:
            raise SearchStopped(f"the search budget ({self.goal.budget_minutes:g} min) ran out before {technique}")
        candidate = self.runner.candidate(technique)
        record = {"family": family.pattern, "knob": knob, "technique": technique, "parent": parent,
                  "rows": 0, "drop": None, "drop_low": None, "drop_high": None, "verdict": "fail", "early": False,
                  "decided_by": None, "build_s": round(candidate.build_s, 2), "quality_s": 0.0,
                  "cached": candidate.cached, "speed_ratio": None, "size_bytes": None, "memory_bytes": None,
                  "error": candidate.error}
        if candidate.error is None:
            started = self.clock()
            try:
                decision = decide(self.runner.reference, candidate.scores_at, self.runner.looks, self.goal)
                record.update(rows=decision.rows, drop=round(decision.drop, 4), drop_low=round(decision.low, 4),
                              drop_high=round(decision.high, 4), verdict=decision.verdict, early=decision.early,
                              decided_by=decision.decided_by)
                figures = candidate.figures() if candidate.figures else {}
                record.update({k: figures.get(k) for k in ("speed_ratio", "size_bytes", "memory_bytes")})
            except (CompressbenchError, RuntimeError, ValueError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            finished = candidate.finish() if candidate.finish else {}
            record["quality_s"] = round(self.clock() - started, 2)
            record["cached"] = bool(candidate.cached and finished.get("cached_scores", False))
        if record["error"] is not None:
            record["verdict"] = "fail"
        self.trials.append(record)
        drop = "error: " + record["error"] if record["error"] else (
            f"drop {record['drop']:+.2f} [{record['drop_low']:+.2f}, {record['drop_high']:+.2f}] on "
            f"{record['rows']} {'windows' if self.goal.limit_kind == 'max_ppl_rise_pct' else 'rows'}")
        self.progress(f"search {self.model}: {technique}: {record['verdict']} ({drop}; build {record['build_s']:.0f} s"
                      f"{', cached' if record['cached'] else ''})")
        return record

    def bisect(self, family: Family, values: list, name: Callable, parent: str | None = None) -> dict | None:
        """The most compressed passing value's trial (None: none passes), trying O(log n) values."""
        lo, hi, best = -1, len(values), None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                record = self.trial(family, values[mid], name(values[mid]), parent)
            except SearchStopped:
                if best is not None:  # the budget ran out mid-bisection: the best passing value so far stands
                    self._partial = best
                raise
            if record["verdict"] == "pass":
                lo, best = mid, record
            elif record["error"] is not None and family.grid:
                break  # a discrete knob value that does not build for this model (a group size it cannot take)
            else:
                hi = mid
        return best

    # ------------------------------------------------------------------ families and chains
    def search_family(self, family: Family) -> dict:
        values = family.values(self.layers)
        if family.grid:
            winners = []
            for g in family.grid:
                try:
                    found = self.bisect(family, values, lambda v, g=g: family.name(v, g))
                except SearchStopped:
                    winners += [self._partial] if self._partial is not None else []
                    self._partial = min(winners, key=lambda t: (objective_value(t, self.goal.objective), t["drop"]),
                                        default=None)
                    raise
                winners += [found] if found is not None else []
            best = min(winners, key=lambda t: (objective_value(t, self.goal.objective), t["drop"]), default=None)
        else:
            best = self.bisect(family, values, family.name)
        return self._choice(family.pattern, best, [t for t in self.trials if t["family"] == family.pattern
                                                    and t["parent"] is None])

    def search_chain(self, structural: dict, family: Family) -> dict:
        parent = structural["technique"]
        layers = self.runner.layers_after(parent, self.layers)
        values = family.values(layers)
        best = self.bisect(family, values, lambda v: f"{parent}+{family.name(v)}", parent=parent)
        key = f"{parent}+{family.pattern}"
        return self._choice(key, best, [t for t in self.trials if t["family"] == family.pattern
                                        and t["parent"] == parent])

    def _choice(self, key: str, best: dict | None, tried: list[dict]) -> dict:
        if best is not None:
            return {"technique": best["technique"], "knob": best["knob"], "passed": True, "drop": best["drop"]}
        measured = [t for t in tried if t["drop"] is not None]
        closest = min(measured, key=lambda t: t["drop"], default=None)
        return {"technique": None, "passed": False,
                "closest": None if closest is None else {"technique": closest["technique"], "drop": closest["drop"]},
                "reason": None if measured else "no trial could be measured"}

    def run(self, families: list[Family]) -> dict:
        """Search every family, and chain each structural choice with each quantizing family. Order: the
        quantizing families, then each structural family followed at once by its chains, then the rest (the
        cheap before the trained, as listed), so that a budget that runs out leaves chains, not only families."""
        quantizers = [f for f in families if f.quantizer]
        structural = [f for f in families if f.structural]
        ordered = quantizers + structural + [f for f in families if f not in quantizers + structural]
        current = None
        try:
            for family in ordered:
                current = family.pattern
                self.choices[family.pattern] = choice = self.search_family(family)
                if family.structural and choice["passed"]:
                    for quantizer in quantizers:
                        current = key = f"{choice['technique']}+{quantizer.pattern}"
                        self.chains[key] = self.search_chain(choice, quantizer)
        except SearchStopped as exc:
            self.stopped = str(exc)
            if current is not None and self._partial is not None:  # stopped mid-bisection, with a passing value
                best = self._partial
                choice = {"technique": best["technique"], "knob": best["knob"], "passed": True, "drop": best["drop"],
                          "partial": "the budget ran out mid-bisection: the most compressed passing value tried"}
                (self.chains if current in self.chains or "+" in current else self.choices)[current] = choice
            for family in families:
                self.choices.setdefault(family.pattern, {"technique": None, "passed": False, "closest": None,
                                                         "reason": "not searched: the budget ran out"})
        return self.record()

    def winners(self) -> list[str]:
        """What is benchmarked: each family's and chain's choice, and the frontier, in that order."""
        names = [c["technique"] for c in [*self.choices.values(), *self.chains.values()] if c["passed"]]
        return list(dict.fromkeys(names + frontier(self.trials, self.goal.objective)))

    def record(self) -> dict:
        return {"trials": self.trials, "choices": self.choices, "chains": self.chains,
                "frontier": frontier(self.trials, self.goal.objective),
                "none_passed": [k for k, c in self.choices.items() if not c["passed"]]
                + [k for k, c in self.chains.items() if not c["passed"]],
                "skipped": self.skipped, "stopped": self.stopped, "winners": self.winners()}


def expected_trials(values: int) -> int:
    """Trials a bisection over ``values`` values makes (at most)."""
    return max(1, math.ceil(math.log2(values + 1)))


def plan(families: list[Family], layers: int, runner: Runner, estimate_s: Callable[..., float],
         once_s: Callable[[list[str]], float] = lambda names: 0.0) -> dict:
    """Trials and estimated seconds before the search starts: each family's bisection (per grid value), its
    expected cost the mean of its values' estimates (a cached value costs its quality only) plus its one-off
    cost (``once_s(names)``: a per-layer sensitivity shared by its values); chains counted with the middle
    value of each structural family as a stand-in for the choice to come."""
    trials, seconds = 0, 0.0
    for family in families:
        names = family.names(layers)
        count = expected_trials(len(family.values(layers))) * len(family.grid or (None,))
        trials += count
        seconds += count * sum(estimate_s(n) for n in names) / len(names) + once_s(names)
    structural = [f for f in families if f.structural]
    quantizers = [f for f in families if f.quantizer]
    for s in structural:
        values = s.values(layers)
        parent = s.name(values[len(values) // 2])
        after = runner.layers_after(parent, layers)
        for q in quantizers:
            names = [f"{parent}+{q.name(v)}" for v in q.values(after)]
            count = expected_trials(len(names))
            trials += count
            seconds += count * sum(estimate_s(n, parent) for n in names) / len(names) + once_s(names)
    return {"trials": trials, "estimated_s": round(seconds, 1)}
