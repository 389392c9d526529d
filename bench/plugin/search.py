"""``--search``: before collection, search each selected technique family's knob under the user's limit on
held-apart rows (compressors/search/), then benchmark what it found as ordinary tests.

* configure: the goal is checked (``--max-drop`` for classifiers, ``--max-ppl-rise`` for causal LMs), the
  family patterns in ``--techniques`` (``layerdrop-K``, ``dynamic-int8-fbN``) are taken out of the technique
  selection (bench/plugin/selection.py hands them over), and ``-n`` is refused (each worker would search);
* collection: one plan line per model (trials x estimated build and quality time), then the search, one
  line per trial; each model's choices, chains and frontier are added to its configurations
  (:attr:`RunState.search_winners`, read by bench/conftest.py), their budget is the user's limit
  (:attr:`RunState.search_budgets`, read by bench/rows.py), and their names go to a replay file that
  ``--techniques @FILE`` runs again without searching;
* the saved run holds the whole record (bench/plugin/record.py), and the summary says what was chosen,
  what missed the goal, and the search's cost on the ``time:`` line (bench/plugin/summary.py).

``--collect-only`` prints the plan lines and does not search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest

from bench.plugin.options import option_value
from bench.plugin.state import run_state
from compressors.core.task_kinds import TASK_CAUSAL_LM
from compressors.search.runner import TRIAL_FIXED_S

REPLAY_DIR = Path(".compressbench")


@dataclasses.dataclass
class SearchRequest:
    """What ``--search`` asked for: the goals by task, the families named (None: all), the objective."""

    goals: dict  # task -> compressors.search.engine.Goal
    families: list[str] | None
    objective: str
    budget_minutes: float | None
    out: str | None


def search_request(settings, families: list[str] | None) -> SearchRequest | None:
    """The run's search request, or None without ``--search``; a goal missing, or a limit given without
    ``--search``, is a usage error naming the flags."""
    from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
    from compressors.search.engine import Goal

    values = settings.values
    limits = {"max_drop": values["max_drop"], "max_ppl_rise": values["max_ppl_rise"]}
    if not values["search"]:
        given = [f"--{k.replace('_', '-')}" for k in ("max_drop", "max_ppl_rise", "search_budget", "search_out")
                 if values[k] is not None]
        given += ["--search-rule"] if settings.sources.get("search_rule", "default") != "default" else []
        if given:
            raise pytest.UsageError(f"{', '.join(given)} set the search's goal; add --search to search")
        return None
    if all(v is None for v in limits.values()):
        raise pytest.UsageError("--search needs a limit: --max-drop PP (classifiers: accuracy drop vs fp32, "
                                "percentage points) and/or --max-ppl-rise PCT (causal LMs: perplexity rise, %)")
    budget = values["search_budget"]
    goals = {}
    if limits["max_drop"] is not None:
        goals[TASK_CLASSIFICATION] = Goal("max_drop_pp", float(limits["max_drop"]), values["search_objective"], budget,
                                          values["search_rule"])
    if limits["max_ppl_rise"] is not None:
        goals[TASK_CAUSAL_LM] = Goal("max_ppl_rise_pct", float(limits["max_ppl_rise"]), values["search_objective"],
                                     budget, values["search_rule"])
    return SearchRequest(goals, families, values["search_objective"], budget, values["search_out"])


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    state = run_state(config)
    if state is None or state.search is None:
        return
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(f"--search with -n {config.option.numprocesses}: every pytest-xdist worker would "
                                "search on its own; search without -n (the search writes a replay file: "
                                "--techniques @FILE runs its choices under -n)")


def _models(config) -> list:
    from compressors.builders.models import MODELS

    state = run_state(config)
    named = state.selection.models or MODELS.names()
    return [MODELS.get(m) if isinstance(m, str) else m for m in named]


def _families_for(request: SearchRequest, task: str):
    from compressors.search.space import families_for

    families = families_for(task)
    if request.families is not None:
        families = [f for f in families if f.pattern in request.families]
    return families


class ModelSearch:
    """The search of one model: its context, base artifact, held-apart inputs and runner."""

    def __init__(self, model, ctx, data, probe: dict):
        from compressors.builders.models import ModelUnavailable
        from compressors.search.quality import SearchRows

        self.model, self.data = model, data
        self.rows = SearchRows(data, model.task)
        self.ctx = ctx
        self.problem = None
        try:
            model.check_available(model, ctx)
        except ModelUnavailable as exc:
            self.problem = str(exc)
            return
        self.probe = probe

    def prepare(self):
        """Build (or load) the base model, tokenize the held-apart inputs, score fp32 on them."""
        import json

        from transformers import AutoTokenizer

        from bench.plan import parameter_counts
        from compressors.search.quality import held_apart_inputs
        from compressors.search.runner import TrialRunner

        model, ctx = self.model, self.ctx
        self.base = model.build_base(model, ctx)
        config = json.loads(self.base.file("config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(self.base.path,
                                                  trust_remote_code=getattr(model, "trust_remote_code", False))
        self.inputs = held_apart_inputs(tokenizer, self.rows, config)
        total, embedding = parameter_counts(self.base.path)
        dense = total if model.task == TASK_CAUSAL_LM else max(total - embedding, 1)
        gemm = float(self.probe.get("kernels", {}).get("fp32-gemm", {}).get("gops") or 50.0)
        self.layers = config.get("num_hidden_layers") or config.get("n_layers") or config.get("n_layer")
        self.model_type = config.get("model_type")
        self.runner = TrialRunner(ctx, self.base, model.name, self.inputs, gemm, dense)
        self.dense, self.total, self.gemm = dense, total, gemm

    def estimate_s(self, technique: str, parent: str | None = None) -> float:
        """bench/plan.py's cost model for the stages of ``technique`` not in the cache, plus its scoring; a chain
        trial's ``parent`` (the structural choice) is built once by its family's search, not per trial."""
        from bench import plan as cost
        from compressors.builders.techniques import parse_chain

        seconds = self.runner.quality_s()
        if self.runner.cached(technique):
            return seconds
        tokens = self.runner.unit_tokens()
        skip = len(parse_chain(parent).build_stages) if parent else 0
        for stage in parse_chain(technique).build_stages[skip:]:
            if stage.build is None:
                continue
            if stage.trains:
                recipe = getattr(stage.config, "recipe", None)
                n = getattr(recipe, "n_sentences", 8000)
                seconds += 6 * self.dense * n * getattr(recipe, "epochs", 1) * tokens / (
                    self.gemm * 1e9 * cost.TRAIN_EFFICIENCY)
            seconds += self._stage_s(stage)
        return seconds

    def _stage_s(self, stage) -> float:
        from bench import plan as cost
        from compressors.builders.techniques import get_technique

        recipe = getattr(stage.config, "recipe", None)  # a float fallback builds with its recipe
        calibrates = get_technique(recipe).uses_data if isinstance(recipe, str) else (
            stage.uses_data and not stage.trains and not hasattr(stage.config, "drop"))
        seconds = cost.BUILD_FIXED_S + cost.BUILD_S_PER_MPARAM * self.total / 1e6
        if calibrates:
            seconds += cost.CALIBRATION_S + cost.CALIBRATION_S_PER_MPARAM * self.total / 1e6
        return seconds

    def once_s(self, names: list[str]) -> float:
        """A family's one-off cost: the per-layer sensitivity its values share (layer dropping: one scoring of
        the held-apart rows per layer; float fallback: one leave-one-in build and a scoring of 256 rows per
        layer), nothing when a value of it is already cached (its sensitivity is too)."""
        from compressors.builders.techniques import parse_chain

        if any(self.runner.cached(n) for n in names):
            return 0.0
        last = parse_chain(names[0]).stages[-1]
        scoring = self.runner.quality_s() - TRIAL_FIXED_S
        layers = self.runner.layers_after(names[0], self.layers or 0)
        if hasattr(last.config, "drop"):
            return layers * scoring
        if "-fb" in last.name:  # its scoring rows: 256 held-apart sentences, or a few short windows of an LM's text
            config = last.config
            share = (config.windows * config.window_tokens / (self.inputs.units * self.runner.unit_tokens())
                     if self.inputs.task == TASK_CAUSAL_LM else config.sentences / max(self.inputs.units, 1))
            return layers * (self._stage_s(last) + scoring * min(1.0, share))
        return 0.0


def run_search(config, terminal) -> dict:
    """Search every selected model that has a goal; returns the whole record (also kept on the run's state)."""
    from bench.plugin.gating import kernel_probe
    from compressors.core.quiet import quiet_libraries
    from compressors.quality.metrics import artifact_size_bytes
    from compressors.records.search_record import SearchRecord
    from compressors.search.engine import RECORD_VERSION, RULE, Search, plan
    from compressors.search.space import availability

    state = run_state(config)
    request = state.search
    started = time.monotonic()
    deadline = None if request.budget_minutes is None else started + request.budget_minutes * 60
    record = {"version": RECORD_VERSION, "goal": None, "goals": {}, "rule": RULE, "models": {}, "not_searched": {},
              "stopped": None}

    def say(line: str) -> None:
        terminal.write_line(line) if terminal is not None else print(line)

    ctx, data_for = _context(config)
    probe = kernel_probe(config)
    verbose = option_value(config, "verbose", 0) > 0
    planned_trials, planned_s = 0, 0.0
    for model in _models(config):
        goal = request.goals.get(model.task)
        families = _families_for(request, model.task)
        if goal is None or not families:
            continue
        record["goals"][model.task] = goal.to_dict()
        record["goal"] = record["goal"] or goal.to_dict()
        data = data_for(model)
        searcher = ModelSearch(model, dataclasses.replace(ctx, model=model, data=data), data, probe)
        if searcher.problem:
            record["not_searched"][model.name] = searcher.problem
            say(f"search {model.name}: not searched: {searcher.problem}")
            continue
        entry = {"task": model.task, "skipped": {}}
        with quiet_libraries() if not verbose else contextlib.nullcontext():
            searcher.prepare()
        usable = []
        for family in families:
            reason = availability(family, searcher.layers, searcher.model_type, bool(data.has_train))
            if reason:
                entry["skipped"][family.pattern] = reason
                say(f"search {model.name}: {family.pattern} left out: {reason}")
            else:
                usable.append(family)
        estimate = plan(usable, searcher.layers, searcher.runner, searcher.estimate_s, searcher.once_s)
        planned_trials += estimate["trials"]
        planned_s += estimate["estimated_s"]
        entry["plan"] = estimate
        entry["held_apart"] = {"source": searcher.inputs.source, "rows": searcher.inputs.units,
                               "checksum": searcher.inputs.checksum, "looks": list(searcher.inputs.looks)}
        limit = (f"--max-drop {goal.limit:g} pp" if goal.limit_kind == "max_drop_pp"
                 else f"--max-ppl-rise {goal.limit:g}%")
        say(f"search plan: {model.name}: {len(usable)} families ({', '.join(f.pattern for f in usable)}), about "
            f"{estimate['trials']} trials, ~{estimate['estimated_s'] / 60:.0f} min (cached stages cost their "
            f"scoring only; fp32 GEMM {searcher.gemm:.0f} GFLOP/s from the kernel probe); goal {limit}, objective "
            f"{goal.objective}, rule {goal.rule}, judged on {searcher.inputs.source}")
        search = Search(model.name, searcher.runner, goal, searcher.layers, deadline, say)
        search.skipped = entry["skipped"]
        with quiet_libraries() if not verbose else contextlib.nullcontext():
            result = search.run(usable)
        reference = {"technique": "fp32", "units": searcher.inputs.units,
                     "quality": _reference_quality(searcher.runner.reference, goal),
                     "size_bytes": artifact_size_bytes(searcher.base)}
        entry.update(result, reference=reference)
        record["models"][model.name] = entry
        if result["stopped"]:
            record["stopped"] = result["stopped"]
            say(f"search {model.name}: stopped: {result['stopped']}; benchmarking what it found")
        _say_outcome(say, model.name, entry, goal)
        if record["stopped"]:
            break
    trials = [t for m in record["models"].values() for t in m.get("trials", [])]
    record.update(seconds=round(time.monotonic() - started, 1), trials=len(trials),
                  cached_trials=sum(1 for t in trials if t["cached"]),
                  plan={"trials": planned_trials, "estimated_s": round(planned_s, 1)})
    if record["models"]:
        SearchRecord.from_dict(record)  # what reports read back: a key missing is this module's bug, said now
    return record


def _context(config):
    """The search's build context (the run's cache and data folder; a stage's build sees train rows only, as
    in any run) and how a model's data is found: the user's files for a model given by path, else its task's."""
    from compressors.builders.context import BuildContext
    from compressors.core.cache import ArtifactCache
    from compressors.quality.data import DataError, resolve_data_dir
    from compressors.quality.taskdata import default_data

    state = run_state(config)
    settings = state.settings
    try:
        data_dir = resolve_data_dir(settings.values["data_dir"])
    except DataError as exc:
        pytest.exit(f"compressbench: {exc}", returncode=4)
    ctx = BuildContext(cache=ArtifactCache(settings.values["cache_dir"]), data_dir=data_dir)

    def data_for(model):
        return state.user_data.get(model.name) or default_data(model.task, data_dir)

    return ctx, data_for


def _reference_quality(scores, goal) -> float:
    import numpy as np

    if goal.limit_kind == "max_ppl_rise_pct":
        return round(float(np.exp(np.mean(scores))), 4)  # perplexity of the windows' mean NLL
    return round(float(np.mean(scores) * 100), 3)


def _say_outcome(say, model: str, entry: dict, goal) -> None:
    unit = "pp" if goal.limit_kind == "max_drop_pp" else "%"
    for key, choice in [*entry["choices"].items(), *entry["chains"].items()]:
        if choice["passed"]:
            say(f"search {model}: {key}: {choice['technique']} (held-apart drop {choice['drop']:+.2f} {unit})")
        elif choice.get("closest"):
            closest = choice["closest"]
            say(f"search {model}: {key}: none meets {goal.limit:g} {unit}; the closest is {closest['technique']} "
                f"({closest['drop']:+.2f} {unit})")
        else:
            say(f"search {model}: {key}: none meets {goal.limit:g} {unit} ({choice.get('reason')})")
    say(f"search {model}: frontier: {', '.join(entry['frontier']) or 'empty (nothing passed)'}")


def write_replay(record: dict, out: str | None) -> Path:
    """The chosen names, one per line (``--techniques @FILE``), in a new file: an existing one is never
    overwritten (``--search-out`` naming one is an error)."""
    lines = ["# compressbench --search choices: replay with --techniques @THIS_FILE (no search)",
             f"# goal: {record['goals']}", "fp32"]
    for name, entry in record["models"].items():
        winners = entry.get("winners") or []
        lines.append(f"# {name}: {len(winners)} chosen")
        lines += [w for w in winners if w not in lines]
    if out:
        path = Path(out)
        if path.exists():
            raise pytest.UsageError(f"--search-out {out}: the file exists; the search never overwrites a saved file "
                                    "(name a new one)")
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = REPLAY_DIR / f"search-{stamp}.txt"
        n = 1
        while path.exists():
            n += 1
            path = REPLAY_DIR / f"search-{stamp}-{n}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as handle:  # exclusive: never over a file that appeared meanwhile
        handle.write("\n".join(lines) + "\n")
    return path


def winner_budgets(record: dict) -> dict:
    """The budgets table entries of the search's winners, for the model that chose each: the user's limit on
    the drop (the metric table's budget key for the task) over bench/budgets.toml's, and no declared exception
    (a winner that misses the user's limit fails, whatever the file declared against its own budget)."""
    budgets = {}
    for model, entry in record["models"].items():
        goal = record["goals"].get(entry["task"])
        if goal is None:
            continue
        key = "max_accuracy_drop_pp" if goal["limit_kind"] == "max_drop_pp" else "max_perplexity_increase_pct"
        for name in entry.get("winners") or []:
            table = budgets.setdefault(name, {"defaults": {}, "models": {}})
            table["models"][model] = {key: goal["limit"], "known_over_budget": None, "known_figure": None}
    return budgets


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    config = session.config
    state = run_state(config)
    if state is None or state.search is None:
        return
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if config.option.collectonly:
        if terminal is not None:
            terminal.write_line("search: --collect-only: the search does not run; its plan is printed when it does")
        return
    record = run_search(config, terminal)
    state.search_record = record
    state.search_winners = {name: list(entry.get("winners") or []) for name, entry in record["models"].items()}
    state.search_budgets = winner_budgets(record)
    if any(state.search_winners.values()):
        path = write_replay(record, state.search.out)
        record["replay_file"] = str(path)
        if terminal is not None:
            terminal.write_line(f"search: {sum(map(len, state.search_winners.values()))} chosen configuration(s) "
                                f"written to {path} (replay: --techniques @{path})")
    else:
        record["replay_file"] = None


def pytest_sessionfinish(session, exitstatus):
    """Nothing met the goal for any searched model: the run says so in its exit status too."""
    state = run_state(session.config)
    record = getattr(state, "search_record", None) if state is not None else None
    if record and record["models"] and not any(state.search_winners.values()) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def search_summary_lines(record: dict) -> list[str]:
    """The end-of-run lines: per model, what was chosen and what missed the goal (with its closest trial)."""
    lines = [f"search {name}: not searched ({why})" for name, why in record.get("not_searched", {}).items()]
    for name, entry in record["models"].items():
        chosen = entry.get("winners") or []
        lines.append(f"search {name}: {len(entry['trials'])} trials; chosen: {', '.join(chosen) or 'none'}")
        for key in entry["none_passed"]:
            choice = entry["choices"].get(key) or entry["chains"].get(key)
            closest = choice.get("closest")
            lines.append(f"search {name}: no {key} knob meets the goal"
                         + (f"; the closest is {closest['technique']} (held-apart drop {closest['drop']:+.2f})"
                            if closest else f" ({choice.get('reason')})"))
    if record.get("stopped"):
        lines.append(f"search: stopped early: {record['stopped']}")
    if record["models"] and not any(e.get("winners") for e in record["models"].values()):
        lines.append("search: no configuration meets the goal; exit status 1 (the record names the closest trials)")
    return lines


def search_time_part(record: dict) -> str:
    trials, cached = record.get("trials", 0), record.get("cached_trials", 0)
    share = f"{cached / trials:.0%}" if trials else "0%"
    estimate = record.get("plan", {}).get("estimated_s", 0.0)
    return (f"search {record.get('seconds', 0.0) / 60:,.1f} min ({trials} trials, {share} cached; the plan "
            f"estimated {estimate / 60:,.1f} min)")
