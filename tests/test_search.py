"""The accuracy-aware search (compressors/search/, bench/plugin/search.py): the decision rule at its edges,
early stopping, bisection on a monotone knob, chains, a family where nothing passes (its closest trial kept),
the frontier, the budget stop, the guard on evaluation rows, the replay file and the record's schema; fake
runners score made-up per-row outcomes, so every case runs in milliseconds."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.search.engine import (
    RECORD_VERSION,
    RULE,
    Candidate,
    Goal,
    Search,
    decide,
    expected_trials,
    frontier,
    paired_drop,
    plan,
)
from compressors.search.quality import EvaluationRowsGuard, HeldApart, ScoreStore, SearchRows, lazy_scores
from compressors.search.space import FAMILIES, Family, family_named

ROWS = 1000
LOOKS = (256, 512, 1000)


def outcome(drop_pp: float, seed: int = 0, rows: int = ROWS) -> np.ndarray:
    """Per-row correctness of a trial whose accuracy is the reference's minus ``drop_pp``: the reference is
    right on every row, and the trial wrong on a spread-out share of them."""
    wrong = int(round(drop_pp / 100 * rows))
    correct = np.ones(rows)
    correct[np.random.default_rng(seed).permutation(rows)[:wrong]] = 0
    return correct


class FakeRunner:
    """Techniques named ``<stem>-<value>`` whose drop is ``drops[name]``; counts the rows it scored."""

    def __init__(self, drops: dict[str, float], errors=()):
        self.drops, self.errors = drops, set(errors)
        self.looks, self.reference = LOOKS, np.ones(ROWS)
        self.asked: list[str] = []
        self.scored: dict[str, int] = {}

    def candidate(self, technique):
        self.asked.append(technique)
        if technique in self.errors:
            return Candidate(technique, error="RuntimeError: it did not build")
        scores = outcome(self.drops[technique])

        def scores_at(n):
            self.scored[technique] = max(self.scored.get(technique, 0), n)
            return scores[:n]

        speed = 1.0 + 0.1 * len(self.asked)
        return Candidate(technique, scores_at=scores_at, build_s=1.0, cached=False,
                         figures=lambda: {"speed_ratio": speed, "size_bytes": 1000 - len(technique), "memory_bytes": 5},
                         finish=lambda: {"cached_scores": False})

    def layers_after(self, technique, layers):
        return layers - 1 if technique.startswith("drop-") else layers


def knob_family(stem: str, values, structural=False, quantizer=False) -> Family:
    return Family(f"{stem}-K", "a test knob", TASK_CLASSIFICATION, values=lambda layers: list(values),
                  name=lambda v: f"{stem}-{v}", structural=structural, quantizer=quantizer)


GOAL = Goal("max_drop_pp", 0.5)
POINT = Goal("max_drop_pp", 0.5, rule="point")


# ------------------------------------------------------------------------- the decision rule
def test_paired_drop_of_identical_outcomes_is_zero_with_an_interval_around_it():
    drop, low, high = paired_drop(np.ones(100), np.ones(100), "max_drop_pp")
    assert drop == 0.0 and low == -high and 0 < high < 5


def test_the_confident_rule_passes_only_what_the_interval_shows_within_the_limit():
    same = decide(np.ones(ROWS), lambda n: np.ones(n), LOOKS, GOAL)
    # agreeing on 256 rows is not certainty (one pseudo pair of disagreeing rows in the variance) ...
    assert same.verdict == "pass" and same.rows == ROWS and same.decided_by == "interval"
    # ... and nothing is ever shown to lose nothing at all
    zero = decide(np.ones(ROWS), lambda n: np.ones(n), LOOKS, Goal("max_drop_pp", 0.0))
    assert zero.verdict == "fail" and zero.rows == ROWS and zero.decided_by == "not shown within the limit"
    at_limit = decide(np.ones(ROWS), lambda n: outcome(0.5)[:n], LOOKS, GOAL)
    assert at_limit.drop == pytest.approx(0.5) and at_limit.verdict == "fail" and at_limit.high > 0.5
    below = decide(np.ones(ROWS), lambda n: outcome(0.2)[:n], LOOKS, Goal("max_drop_pp", 1.0))
    assert below.verdict == "pass" and below.high <= 1.0


def test_the_point_rule_lets_the_point_estimate_decide_at_the_last_look():
    zero = Goal("max_drop_pp", 0.0, rule="point")
    same = decide(np.ones(ROWS), lambda n: np.ones(n), LOOKS, zero)
    assert same.verdict == "pass" and same.rows == ROWS and same.decided_by == "point estimate"
    one_row = decide(np.ones(ROWS), lambda n: outcome(0.1)[:n], LOOKS, zero)
    assert one_row.verdict == "fail" and one_row.rows == ROWS
    point = Goal("max_drop_pp", 0.5, rule="point")
    at_limit = decide(np.ones(ROWS), lambda n: outcome(0.5)[:n], LOOKS, point)
    assert at_limit.drop == pytest.approx(0.5) and at_limit.verdict == "pass"
    over = decide(np.ones(ROWS), lambda n: outcome(0.6)[:n], LOOKS, point)
    assert over.verdict == "fail" and not over.early and over.decided_by == "point estimate"


def test_a_clear_failure_stops_at_the_first_look():
    clear = decide(np.ones(ROWS), lambda n: outcome(10.0)[:n], LOOKS, GOAL)
    assert clear.verdict == "fail" and clear.rows == 256 and clear.early and clear.low > GOAL.limit


def test_the_interval_uses_the_shared_level_and_widens_with_fewer_rows():
    ref, trial = np.ones(ROWS), outcome(2.0)
    _d, low_small, high_small = paired_drop(ref, trial[:256], "max_drop_pp")
    _d, low_all, high_all = paired_drop(ref, trial, "max_drop_pp")
    assert high_small - low_small > high_all - low_all
    d = np.concatenate([(ref - trial) * 100, [100.0, -100.0]])
    assert high_all - low_all == pytest.approx(2 * 2.128 * d.std(ddof=1) / math.sqrt(ROWS + 2))


def test_perplexity_rise_is_paired_per_window_through_exp():
    ref = np.full(32, 3.0)
    trial = ref + np.log(1.02) + np.random.default_rng(0).normal(0, 0.001, 32)
    rise, low, high = paired_drop(ref, trial, "max_ppl_rise_pct")
    assert rise == pytest.approx(2.0, abs=0.05) and low < rise < high
    assert decide(ref, lambda n: trial[:n], (8, 16, 32), Goal("max_ppl_rise_pct", 1.0)).verdict == "fail"
    assert decide(ref, lambda n: trial[:n], (8, 16, 32), Goal("max_ppl_rise_pct", 3.0)).verdict == "pass"


# ------------------------------------------------------------------------- bisection, families, chains
def test_bisection_finds_the_most_compressed_passing_value_in_log_trials():
    values = list(range(5, 100, 5))
    drops = {f"p-{v}": v / 40 for v in values}  # passes up to p-20 (0.5 pp)
    runner = FakeRunner(drops)
    search = Search("m", runner, POINT, layers=6)
    record = search.run([knob_family("p", values)])
    assert record["choices"]["p-K"] == {"technique": "p-20", "knob": 20, "passed": True, "drop": 0.5}
    assert len(runner.asked) <= expected_trials(len(values)) == 5
    assert "p-20" in record["winners"] and record["none_passed"] == []


def test_a_family_where_nothing_passes_keeps_its_closest_trial():
    drops = {f"q-{v}": 1.0 + v for v in range(4)}
    record = Search("m", FakeRunner(drops), POINT, layers=6).run([knob_family("q", range(4))])
    choice = record["choices"]["q-K"]
    assert choice["passed"] is False and choice["technique"] is None
    assert choice["closest"] == {"technique": "q-0", "drop": 1.0}
    assert record["none_passed"] == ["q-K"] and record["winners"] == []


def test_a_trial_that_fails_to_build_counts_as_failing_and_is_recorded():
    drops = {f"e-{v}": 0.0 for v in range(3)}
    record = Search("m", FakeRunner(drops, errors={"e-1"}), GOAL, layers=6).run([knob_family("e", range(3))])
    failed = next(t for t in record["trials"] if t["technique"] == "e-1")
    assert failed["verdict"] == "fail" and "did not build" in failed["error"]
    assert record["choices"]["e-K"]["technique"] == "e-0"


def test_a_grid_value_that_does_not_build_is_left_after_its_first_error():
    drops = {f"g{g}-{v}": v / 10 for g in (1, 2) for v in range(8)}
    runner = FakeRunner(drops, errors={f"g2-{v}" for v in range(8)})
    family = Family("g-rR-gG", "two knobs", TASK_CLASSIFICATION, values=lambda layers: list(range(8)),
                    name=lambda v, g: f"g{g}-{v}", grid=(1, 2))
    record = Search("m", runner, POINT, layers=6).run([family])
    assert [t for t in runner.asked if t.startswith("g2")] == ["g2-3"]
    assert record["choices"]["g-rR-gG"]["technique"] == "g1-5"


def test_chains_retune_the_quantizer_on_the_structural_choice():
    drops = {"drop-1": 0.1, "drop-2": 0.3, "drop-3": 2.0}
    drops |= {f"fb-{n}": 0.0 for n in range(4)}
    # on the chain the drops add up: fewer layers kept float (fb-0) pushes it over
    drops |= {f"drop-2+fb-{n}": 0.3 + (0.4 if n == 0 else 0.1) for n in range(4)}
    runner = FakeRunner(drops)
    structural = knob_family("drop", [1, 2, 3], structural=True)
    quantizer = knob_family("fb", [3, 2, 1, 0], quantizer=True)
    record = Search("m", runner, POINT, layers=4).run([structural, quantizer])
    assert record["choices"]["drop-K"]["technique"] == "drop-2"
    assert record["choices"]["fb-K"]["technique"] == "fb-0"
    chain = record["chains"]["drop-2+fb-K"]
    assert chain["technique"] == "drop-2+fb-1" and chain["passed"]
    assert all(t["parent"] == "drop-2" for t in record["trials"] if "+" in t["technique"])
    assert "drop-2+fb-1" in record["winners"]


def test_the_budget_stops_the_search_with_what_it_has():
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0, 100.0] + [1000.0] * 50)
    runner = FakeRunner({f"b-{v}": 0.0 for v in range(8)} | {f"c-{v}": 0.0 for v in range(8)})
    search = Search("m", runner, Goal("max_drop_pp", 0.5, budget_minutes=1), layers=6, deadline=60.0,
                    clock=lambda: next(clock))
    record = search.run([knob_family("b", range(8)), knob_family("c", range(8))])
    assert record["stopped"] and "budget" in record["stopped"]
    assert record["choices"]["c-K"]["reason"] == "not searched: the budget ran out"
    assert len(runner.asked) < 6


def test_a_budget_that_runs_out_mid_bisection_keeps_the_best_passing_value_so_far():
    values = list(range(8))
    runner = FakeRunner({f"m-{v}": v / 10 for v in values})  # passes up to m-5
    ticks = iter([0.0] * 6 + [100.0] * 50)  # two trials start in time (three clock reads each), the third not
    search = Search("m", runner, Goal("max_drop_pp", 0.5, budget_minutes=1, rule="point"), layers=6, deadline=60.0,
                    clock=lambda: next(ticks))
    record = search.run([knob_family("m", values)])
    choice = record["choices"]["m-K"]
    assert record["stopped"] and choice["passed"] and "mid-bisection" in choice["partial"]
    assert choice["technique"] in {t["technique"] for t in record["trials"] if t["verdict"] == "pass"}


def test_the_frontier_keeps_only_non_dominated_passing_trials():
    trials = [
        {"technique": "a", "verdict": "pass", "error": None, "drop": 0.1, "speed_ratio": 1.2, "size_bytes": 100},
        {"technique": "b", "verdict": "pass", "error": None, "drop": 0.3, "speed_ratio": 2.0, "size_bytes": 100},
        {"technique": "c", "verdict": "pass", "error": None, "drop": 0.3, "speed_ratio": 1.1, "size_bytes": 100},
        {"technique": "d", "verdict": "fail", "error": None, "drop": 0.9, "speed_ratio": 5.0, "size_bytes": 10},
        {"technique": "e", "verdict": "pass", "error": None, "drop": 0.4, "speed_ratio": 1.0, "size_bytes": 50},
    ]
    assert frontier(trials, "latency") == ["a", "b", "e"]
    assert frontier(trials, "size") == ["a", "e"]


def test_the_plan_counts_bisection_trials_per_family_and_chain():
    runner = FakeRunner({})
    families = [knob_family("drop", [1, 2, 3], structural=True), knob_family("fb", [3, 2, 1, 0], quantizer=True)]
    estimate = plan(families, 4, runner, lambda name, parent=None: 10.0)
    assert estimate == {"trials": 2 + 3 + 3, "estimated_s": 80.0}  # the chain: the middle structural value


def test_every_family_is_named_by_its_pattern_only():
    assert family_named("layerdrop-K")[0].names(6)[:2] == ["layerdrop-1", "layerdrop-2"]
    assert family_named("dynamic-int8") == [] and len(family_named("dynamic-int8-fbN")) == 2
    assert len({f.pattern for f in FAMILIES if f.task == TASK_CLASSIFICATION}) == 7
    int4 = family_named("openvino-int4-wo-rR-gG")[0]
    assert int4.names(30)[0] == "openvino-int4-wo-r0-g64" and len(int4.names(30)) == 33


# ------------------------------------------------------------------------- data: held-apart only
class _Data:
    name = "toy"

    def __init__(self):
        self.eval_reads = 0

    def eval(self):
        self.eval_reads += 1
        raise AssertionError("evaluation rows read")

    def held_apart(self):
        from compressors.quality.data import TextClassificationSplit

        split = TextClassificationSplit("toy-held", [f"s{i}" for i in range(10)], list(range(10)), "toy", "c" * 16)
        return None, split


def test_the_search_never_reads_evaluation_rows():
    rows = SearchRows(_Data(), TASK_CLASSIFICATION)
    with pytest.raises(EvaluationRowsGuard, match="held-apart rows only"):
        rows.eval()
    ordered = rows.classifier_rows()
    assert sorted(ordered.sentences) == sorted(f"s{i}" for i in range(10))
    assert ordered.sentences != [f"s{i}" for i in range(10)]  # a seeded shuffle: every prefix a random subsample


def test_scores_are_computed_incrementally_and_stored(tmp_path):
    batches = [{"x": np.arange(32)}, {"x": np.arange(32)}, {"x": np.arange(4)}]
    labels = np.zeros(68, np.int64)
    inputs = HeldApart(TASK_CLASSIFICATION, 68, batches, labels, "sum", "toy")
    calls = []

    class Predictor:
        def prepare(self, batch):
            return batch

        def logits(self, batch):
            calls.append(len(batch["x"]))
            return np.tile([1.0, 0.0], (len(batch["x"]), 1))

    scores_at = lazy_scores(Predictor, inputs, None)
    assert scores_at(32).tolist() == [1.0] * 32 and calls == [32]
    assert len(scores_at(68)) == 68 and calls == [32, 32, 4]
    store = ScoreStore(tmp_path)
    store.put("artifact", "sum", scores_at(68))
    again = lazy_scores(lambda: pytest.fail("stored scores are read, not recomputed"), inputs,
                        store.get("artifact", "sum"))
    assert again(68).sum() == 68


# ------------------------------------------------------------------------- the plugin side
def test_the_replay_file_is_new_every_time_and_replays(tmp_path, monkeypatch):
    from bench.plugin import search as plugin
    from bench.plugin.selection import replay_names

    monkeypatch.chdir(tmp_path)
    record = {"goals": {"sequence-classification": GOAL.to_dict()},
              "models": {"m": {"winners": ["layerdrop-1", "layerdrop-1+dynamic-int8-fb2"]}}}
    first, second = plugin.write_replay(record, None), plugin.write_replay(record, None)
    assert first != second and first.exists() and second.exists()
    assert replay_names([f"@{first}", "onnx-int8"]) == ["fp32", "layerdrop-1", "layerdrop-1+dynamic-int8-fb2",
                                                         "onnx-int8"]
    with pytest.raises(pytest.UsageError, match="never overwrites"):
        plugin.write_replay(record, str(first))
    with pytest.raises(pytest.UsageError, match="cannot read"):
        replay_names(["@missing.txt"])


def test_goals_need_search_and_search_needs_a_goal():
    from bench.plugin.search import search_request

    def settings(**values):
        base = {"search": False, "max_drop": None, "max_ppl_rise": None, "search_budget": None, "search_out": None,
                "search_objective": "latency", "search_rule": "confident"}
        return types.SimpleNamespace(values=base | values, sources={})

    assert search_request(settings(), None) is None
    with pytest.raises(pytest.UsageError, match="add --search"):
        search_request(settings(max_drop=0.5), None)
    with pytest.raises(pytest.UsageError, match="--max-drop PP"):
        search_request(settings(search=True), None)
    request = search_request(settings(search=True, max_ppl_rise=1.0, search_objective="size"), ["l1-P"])
    assert list(request.goals) == ["causal-lm"] and request.goals["causal-lm"].objective == "size"


def test_the_record_has_the_schema_reports_read():
    drops = {f"p-{v}": v / 10 for v in range(1, 10)}
    record = Search("m", FakeRunner(drops), POINT, layers=6).run([knob_family("p", range(1, 10))])
    assert set(record) >= {"trials", "choices", "chains", "frontier", "none_passed", "winners", "stopped"}
    trial = record["trials"][0]
    assert set(trial) >= {"family", "knob", "technique", "parent", "rows", "drop", "drop_low", "drop_high",
                          "verdict", "early", "build_s", "quality_s", "cached", "speed_ratio", "size_bytes",
                          "memory_bytes", "error"}
    assert RECORD_VERSION == 1 and "Bonferroni" in RULE and "closest" in RULE and "--search-rule point" in RULE
    from compressors.records.search_record import SearchRecord

    whole = {"version": RECORD_VERSION, "goal": GOAL.to_dict(), "rule": RULE, "seconds": 1.0, "trials": 4,
             "models": {"m": record | {"reference": {"technique": "fp32", "quality": 90.0}, "held_apart": {}}}}
    read = SearchRecord.from_dict(whole)  # what python -m reports search and the HTML report read
    assert read.models["m"].choices["p-K"].technique == "p-5"


@pytest.mark.slow
def test_a_search_through_the_real_harness_on_a_tiny_model(tmp_path):
    """A model given by path with --dataset and --dataset-train: its families searched on a slice of the train
    file, the choices benchmarked as ordinary tests (held to the limit), the record saved and read back by
    python -m reports search, the replay file written, the search's cost on the time: line."""
    import json

    from compressors.records.search_record import SearchRecord
    from tests.test_suite_options import ROOT, run_pytest
    from tests.test_user_runs import nli_rows, save_nli_model, write_csv

    model = save_nli_model(tmp_path / "tiny")
    data = write_csv(tmp_path / "dev.csv", ["premise", "hypothesis", "gold"], nli_rows())
    train = write_csv(tmp_path / "train.csv", ["premise", "hypothesis", "gold"], nli_rows(200))
    storage = tmp_path / "store"
    replay = tmp_path / "chosen.txt"
    out = run_pytest("bench", "-m", "cpu", "--models", str(model), "--dataset-eval", str(data), "--dataset-train",
                     str(train), "--text-column", "premise", "--text-pair-column", "hypothesis", "--label-column",
                     "gold", "--search", "--max-drop", "100", "--search-out", str(replay),
                     "--techniques", "fp32,dynamic-int8-fbN,l1-P", "-k", "bs1",
                     "--cache-dir", str(tmp_path / "cache"), "--benchmark-min-rounds=1", "--benchmark-max-time=0.02",
                     f"--benchmark-storage=file://{storage}", "--benchmark-save=searched", cwd=ROOT)
    text = out.stdout + out.stderr
    assert "search plan: tiny:" in text and "trials" in text, text[-4000:]
    assert out.returncode == 0, text[-4000:]
    saved = json.loads(next(storage.rglob("*_searched.json")).read_text())
    record = SearchRecord.from_dict(saved["compressbench"]["search"])
    tiny = record.models["tiny"]
    assert tiny.held_apart["rows"] < 200 and "train.csv" in tiny.held_apart["source"]
    techniques = {b["extra_info"]["technique"] for b in saved["benchmarks"]}
    chosen = [c.technique for c in tiny.choices.values() if c.passed]
    assert chosen and set(chosen) <= techniques  # the winners ran as ordinary tests
    assert replay.read_text().splitlines()[2] == "fp32" and all(c in replay.read_text() for c in chosen)
    assert "search " in [line for line in text.splitlines() if line.startswith("time:")][-1]
    import subprocess
    import sys

    path = next(storage.rglob("*_searched.json"))
    shown = subprocess.run([sys.executable, "-m", "reports", "search", str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and chosen[0] in shown.stdout, shown.stdout + shown.stderr


def test_family_patterns_in_techniques_need_search_and_leave_fp32_as_the_fixed_matrix():
    from bench.plugin.selection import search_families

    def settings(search):
        return types.SimpleNamespace(values={"search": search})

    assert search_families(settings(True), ["layerdrop-K", "dynamic-int8-fbN"]) == (
        ["fp32"], ["layerdrop-K", "dynamic-int8-fbN"])
    assert search_families(settings(True), ["onnx-int8", "l1-P"]) == (["onnx-int8"], ["l1-P"])
    assert search_families(settings(True), None) == (None, None)
    with pytest.raises(pytest.UsageError, match="add --search"):
        search_families(settings(False), ["layerdrop-K"])
