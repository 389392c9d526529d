"""``python -m reports search`` and the HTML report's search section, from a hand-written search record (the
schema of compressors/records/search_record.py, version 1) in a run saved as pytest-benchmark saves it."""

import copy
import json
import re

import pytest

from compressors.records.search_record import SearchRecord, SearchRecordError
from reports.__main__ import main

RULE = ("Each family's knob is the cheapest by the objective whose upper 95% bound of the held-apart drop is "
        "within the limit. A trial stops early once its interval is wholly on one side of the limit.")


def trial(family, knob, technique, drop, verdict, rows=1000, parent=None, **more):
    return {"family": family, "knob": knob, "technique": technique, "parent": parent, "rows": rows, "drop": drop,
            "drop_low": None if drop is None else round(drop - 0.5, 2),
            "drop_high": None if drop is None else round(drop + 0.5, 2), "verdict": verdict, "early": False,
            "build_s": 95.2, "quality_s": 3.1, "cached": False, "speed_ratio": 1.2, "size_bytes": 75 * 2**20,
            "memory_bytes": None, "error": None, **more}


def search_record() -> dict:
    return {
        "version": 1,
        "goal": {"limit_kind": "max_drop_pp", "limit": 0.5, "metric": "accuracy_pct", "objective": "latency",
                 "budget_minutes": None},
        "rule": RULE,
        "seconds": 812.4, "trials": 6, "cached_trials": 2,
        "plan": {"trials": 7, "estimated_s": 700.0},
        "stopped": None,
        "replay_file": ".benchmarks/search/minilm.techniques",
        "models": {"tiny": {
            "held_apart": {"source": "sst2-train[-1000:]", "rows": 1000, "checksum": "abc123"},
            "reference": {"technique": "fp32", "quality": 90.1, "latency_s": 0.012, "size_bytes": 90867952},
            "trials": [
                trial("layerdrop", 2, "layerdrop-2", 1.4, "fail", rows=500, early=True),
                trial("layerdrop", 1, "layerdrop-1", 0.2, "pass", speed_ratio=1.21, size_bytes=80 * 2**20),
                trial("l1", 40, "l1-40", 0.3, "pass", speed_ratio=1.5, size_bytes=50 * 2**20, cached=True),
                trial("distill", 5, "distill-l5", 1.3, "fail", cached=True),
                trial("distill", 4, "distill-l4", None, "fail", error="out of memory"),
                trial("dynamic-int8-fb", 2, "layerdrop-1+dynamic-int8-fb2", 0.4, "pass", parent="layerdrop-1",
                      speed_ratio=2.4, size_bytes=30 * 2**20),
            ],
            "choices": {
                "layerdrop": {"technique": "layerdrop-1", "knob": 1, "passed": True, "drop": 0.2},
                "l1": {"technique": "l1-40", "knob": 40, "passed": True, "drop": 0.3},
                "distill": {"technique": None, "passed": False, "closest": {"technique": "distill-l5", "drop": 1.3}},
            },
            "chains": {"layerdrop-1+dynamic-int8-fb": {"technique": "layerdrop-1+dynamic-int8-fb2", "passed": True,
                                                       "drop": 0.4}},
            "frontier": ["layerdrop-1+dynamic-int8-fb2", "l1-40"],
            "none_passed": ["distill"],
        }},
    }


def row(technique, batch_size=32, drop=0.0, **more):
    return {"model": "tiny", "technique": technique, "tier": "cpu", "batch_size": batch_size, "device": "cpu",
            "accuracy_pct": 90.0 - drop, "baseline_accuracy_pct": 90.0, "accuracy_drop_pp": drop,
            "size_bytes": 2**20, "size_ratio_vs_fp32": 0.5, "peak_memory_bytes": 3 * 2**20, **more}


def save(storage, name, search=None):
    """A run as pytest-benchmark saves it: fp32, l1-40 (a 0.7 pp evaluation drop: the held-apart pass does not
    hold) and the chain (0.35 pp, paired speed 2.10), at bs1 and bs32; layerdrop-1 has no row."""
    rows = [row("fp32", b) for b in (1, 32)]
    rows += [row("l1-40", b, drop=0.7, accuracy_drop_ci_pp=[0.1, 1.3]) for b in (1, 32)]
    rows += [row("layerdrop-1+dynamic-int8-fb2", b, drop=0.35 if b == 32 else 0.9,
                 speed_vs_fp32={"ratio": 2.1 if b == 32 else 1.1, "ci95": [2.0, 2.2]}) for b in (1, 32)]
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = [{"name": f"t[{i}]", "stats": {"median": 0.002}, "extra_info": r} for i, r in enumerate(rows)]
    block = {"partial": False} if search is None else {"partial": False, "search": search}
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"benchmarks": benchmarks, "compressbench": block}))
    return path


def test_search_prints_goal_frontier_trials_choices_and_totals(tmp_path, capsys):
    save(tmp_path, "0001_search", search_record())
    assert main(["search", "0001", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "goal: accuracy_pct drop <= 0.5 pp against fp32 on held-apart rows; objective: latency" in out
    assert "rule: Each family's knob is the cheapest by the objective whose upper 95% bound" in out
    assert "A trial stops early" not in out  # the rule's first sentence only
    frontier = out.split("frontier (2):")[1].split("trials (6):")[0].splitlines()
    chain = next(line for line in frontier if "layerdrop-1+dynamic-int8-fb2" in line)
    # held-apart drop and interval, the bs32 row's evaluation drop, its paired speed ratio, its size
    assert "0.40 [-0.10, 0.90]" in chain and "0.35 (bs32)" in chain and "2.10" in chain and "1.0" in chain
    l1 = next(line for line in frontier if "l1-40" in line)
    assert "0.70 [0.10, 1.30] (bs32)" in l1 and "1.50 (search est.)" in l1  # no paired ratio: the estimate
    trials = out.split("trials (6):")[1].split("choices:")[0]
    assert "layerdrop-2" in trials and "early" in trials and "error in distill-l4: out of memory" in trials
    first_family = [line.split()[0] for line in trials.strip().splitlines()[1:4]]
    assert first_family == ["layerdrop", "layerdrop", "l1"]  # grouped by family
    assert "  layerdrop: layerdrop-1 (knob 1), drop 0.20 pp" in out
    assert "  layerdrop-1+dynamic-int8-fb: layerdrop-1+dynamic-int8-fb2, passes, drop 0.40 pp" in out
    assert "search: 6 trials (2 cached, 33%) in 13.5 min; plan 7 trials, ~11.7 min; ran to completion" in out
    assert "replay: pytest bench --techniques @.benchmarks/search/minilm.techniques" in out


def test_held_apart_and_evaluation_verdicts_are_compared_and_disagreements_counted(tmp_path, capsys):
    save(tmp_path, "0001_search", search_record())
    assert main(["search", "0001", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("tiny l1-40: held-apart 0.30 [-0.20, 0.80] pass; evaluation 0.70 [0.10, 1.30] (bs32) fail: DISAGREE"
            in out)
    assert "tiny layerdrop-1+dynamic-int8-fb2: held-apart 0.40 [-0.10, 0.90] pass; evaluation 0.35 (bs32) pass: " \
           "agree" in out
    assert "no evaluation row in this run: tiny layerdrop-1" in out
    assert "1 disagreement(s) among 2 winner(s) with an evaluation row" in out


def test_a_family_where_none_passes_names_the_closest_and_an_early_stop_says_why(tmp_path, capsys):
    record = search_record()
    record["stopped"] = "budget of 10 min spent after 6 of 7 trials"
    save(tmp_path, "0001_search", record)
    assert main(["search", "0001", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  distill: none passes; closest: distill-l5 (drop 1.30 pp)" in out
    assert "stopped early: budget of 10 min spent after 6 of 7 trials" in out


def test_a_run_without_a_search_record_is_a_clear_error(tmp_path, capsys):
    path = save(tmp_path, "0001_plain")
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no search record" in err and "not run with --search" in err


def test_a_record_of_another_version_or_missing_a_key_is_named(tmp_path, capsys):
    record = search_record()
    record["version"] = 2
    path = save(tmp_path, "0001_future", record)
    assert main(["search", str(path)]) == 2
    assert f"{path}: search record version 2: this compressbench reads version 1 only" in capsys.readouterr().err
    record = search_record()
    del record["models"]["tiny"]["trials"][1]["verdict"]
    path = save(tmp_path, "0002_broken", record)
    assert main(["search", str(path)]) == 2
    assert "search record: models.tiny.trials[1] has no 'verdict'" in capsys.readouterr().err
    record = search_record()
    del record["goal"]["limit"]
    with pytest.raises(SearchRecordError, match="goal has no 'limit'"):
        SearchRecord.from_dict(record)
    del record["models"]["tiny"]["frontier"]
    record["goal"]["limit"] = 0.5
    with pytest.raises(SearchRecordError, match="models.tiny has no 'frontier'"):
        SearchRecord.from_dict(record)


def test_the_record_round_trips_and_keys_it_does_not_know_are_ignored():
    data = search_record()
    record = SearchRecord.from_dict(data)
    assert SearchRecord.from_dict(record.to_dict()) == record
    newer = copy.deepcopy(data)
    newer["models"]["tiny"]["trials"][0]["energy_j"] = 3.0  # a field added without changing what others mean
    assert SearchRecord.from_dict(newer) == record
    tiny = record.models["tiny"]
    assert tiny.winners == ["layerdrop-1", "l1-40", "layerdrop-1+dynamic-int8-fb2"]
    assert tiny.trial_of("layerdrop-1").knob == 1 and tiny.trial_of("nothing") is None


def test_the_html_report_draws_the_frontier_and_the_held_apart_vs_evaluation_table(tmp_path, capsys):
    path = save(tmp_path, "0001_search", search_record())
    out = tmp_path / "report"
    assert main(["build", str(path), "--out", str(out)]) == 0
    page, summary = (out / "report.html").read_text(), (out / "summary.md").read_text()
    assert "Accuracy-aware search: tiny" in page and "Accuracy-aware search: tiny" in summary
    assert re.search(r'id="search-frontier-\d+"', page)  # the frontier chart's div
    assert "held-apart drop pp" in page and "layerdrop-1+dynamic-int8-fb2" in page
    assert "| l1-40 | 0.30 [-0.20, 0.80] | pass | 0.70 [0.10, 1.30] (bs32) | fail | DISAGREE |" in summary
    plain = save(tmp_path, "0002_plain")
    assert main(["build", str(plain), "--out", str(tmp_path / "plain")]) == 0
    assert "Accuracy-aware search" not in (tmp_path / "plain" / "report.html").read_text()
