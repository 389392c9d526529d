"""``python -m reports compare`` and the every-metric checks of ``pytest --benchmark-compare``."""

import shutil

import numpy as np
import pytest

from reports.__main__ import main
from reports.compare import BadThreshold, Thresholds, compare_runs, format_comparison, metric_changes
from reports.runs import find_run, load_run
from tests.reports_fixtures import base_cases, case, run_fake_suite, write_fake_suite


@pytest.mark.slow
def test_regressions_fail_with_numbers_and_one_sided_configs_are_listed(saved_runs, capsys):
    assert main(["compare", "0001", "0002", "--storage", str(saved_runs)]) == 1
    out = capsys.readouterr().out
    # these fake rows carry no per-sentence correctness: the threshold alone decides, and says so
    assert (
        "tiny-onnx-int8-cpu-bs32: accuracy 90.00% -> 89.00% (-1.00 pp, threshold -0.5 pp; threshold only "
        "(no per-sentence correctness on the same sentences))"
    ) in out
    assert "tiny-onnx-int8-cpu-bs1: size 1.00 MB -> 1.10 MB (+10.0%, threshold +5%)" in out
    assert "only in 0001_base (2): tiny-layerdrop-2-cpu-bs1, tiny-layerdrop-2-cpu-bs32" in out
    assert "only in 0002_worse (2): tiny-bf16-cpu-bs1" in out
    # fp32 bs1 has no memory in 0002: shown as n/a, not an error
    assert any("memory" in line and "n/a" in line for line in out.splitlines())


@pytest.mark.slow
def test_thresholds_are_options(saved_runs, capsys):
    args = [
        "compare",
        "0001",
        "0002",
        "--storage",
        str(saved_runs),
        "--compare-accuracy-pp",
        "2",
        "--compare-size-pct",
        "20",
        "--compare-latency-pct",
        "1000000",
    ]
    assert main(args) == 0
    assert "no regressions beyond the thresholds" in capsys.readouterr().out
    assert main(["compare", "0001", "0002", "--storage", str(saved_runs), "--compare-size-pct", "-1"]) == 2
    assert "size_pct=-1.0: must be a number >= 0" in capsys.readouterr().err


def test_different_machines_warn_and_still_compare(saved_runs, capsys):
    code = main(["compare", "0001", "0003", "--storage", str(saved_runs), "--compare-latency-pct", "1000000"])
    captured = capsys.readouterr()
    assert code == 0 and "different machines" in captured.err and "another-machine" in captured.err
    assert "tiny-fp32-cpu-bs32" in captured.out


def test_latency_perplexity_and_missing_metrics():
    from compressors.records.results import ResultRow

    ident = {"model": "m", "technique": "t", "tier": "cpu", "batch_size": 1}
    before = ResultRow.from_extra_info(
        {**ident, "perplexity": 20.0, "accuracy_pct": None, "size_bytes": 100}, median_s=0.010
    )
    after = ResultRow.from_extra_info({**ident, "perplexity": 20.5, "size_bytes": None}, median_s=0.0115)
    changes = {c.metric.name: c for c in metric_changes("x", before, after, Thresholds())}
    assert changes["latency median"].regressed and changes["perplexity"].regressed  # +15%, +2.5%
    assert not changes["size"].regressed and changes["size"].delta == "n/a"
    assert "accuracy" not in changes and "memory" not in changes
    assert not metric_changes("x", before, after, Thresholds(latency_pct=20, perplexity_pct=3))[0].regressed
    with pytest.raises(BadThreshold, match="accuracy_pp"):
        Thresholds(accuracy_pp=-1)


def test_missing_run_and_corrupt_run_are_named(saved_runs, tmp_path, capsys):
    assert main(["compare", "0001", "0042", "--storage", str(saved_runs)]) == 2
    assert "no saved run '0042'" in capsys.readouterr().err
    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    bad = find_run("0002", storage)
    bad.write_text('{"benchmarks": [')
    assert main(["compare", "0001", "0002", "--storage", str(storage)]) == 2
    assert f"{bad}: not a readable pytest-benchmark JSON file" in capsys.readouterr().err


def test_compare_runs_matches_by_configuration(saved_runs):
    comparison = compare_runs(load_run(find_run("0001", saved_runs)), load_run(find_run("0003", saved_runs)))
    assert not comparison.only_before and not comparison.only_after
    assert {c.config for c in comparison.changes} == {
        f"tiny-{t}-cpu-bs{b}" for t in ("fp32", "onnx-int8", "layerdrop-2") for b in (1, 32)
    }


@pytest.mark.slow
def test_benchmark_compare_fails_the_regressed_configuration(saved_runs, tmp_path):
    """Inside pytest: --benchmark-compare loads the run; non-timing regressions fail that test with the numbers."""
    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    folder = write_fake_suite(tmp_path / "suite")
    worse = base_cases()[:2] + [case("onnx-int8", b, accuracy_pct=89.0) for b in (1, 32)]
    worse += [case("layerdrop-2", 32, peak_memory_bytes=120 * 2**20), case("bf16", 1)]
    out = run_fake_suite(folder, storage, worse, "-p", "reports.pytest_plugin", "--benchmark-compare=0001")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "3 failed, 3 passed" in text
    assert "tiny-onnx-int8-cpu-bs32 regressed against" in text and "accuracy 90.00% -> 89.00% (-1.00 pp" in text
    assert "memory 100.00 MB -> 120.00 MB (+20.0%, threshold +10%)" in text
    # thresholds are options; without --benchmark-compare nothing is checked
    out = run_fake_suite(
        folder,
        storage,
        worse,
        "-p",
        "reports.pytest_plugin",
        "--benchmark-compare=0001",
        "--compare-accuracy-pp=2",
        "--compare-memory-pct=25",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_fake_suite(folder, storage, worse, "-p", "reports.pytest_plugin")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not list(storage.glob("*/0004_*"))  # nothing was saved by comparing


def test_the_compared_run_adapter_fails_loudly_when_pytest_benchmark_changes():
    """reports.pytest_plugin reads pytest-benchmark's compared run in one adapter; if pytest-benchmark
    stops exposing it, the comparison errors instead of silently checking nothing."""
    import types

    from reports.pytest_plugin import PytestBenchmarkChanged, compared_benchmarks

    mapping = {"0001_base.json": {"test_x": {"extra_info": {}}}}
    config = types.SimpleNamespace(_benchmarksession=types.SimpleNamespace(compared_mapping=mapping))
    assert compared_benchmarks(config) == mapping
    with pytest.raises(PytestBenchmarkChanged, match="no longer exposes the compared run"):
        compared_benchmarks(types.SimpleNamespace(_benchmarksession=types.SimpleNamespace()))


def _timed_row(rounds, contended=False, correct=None):
    from compressors.records.results import ResultRow
    from compressors.records.stats import pack_bools

    info = {
        "model": "m",
        "technique": "t",
        "tier": "cpu",
        "batch_size": 1,
        "round_s": list(rounds),
        "accuracy_pct": 90.0,
        "eval": {"checksum": "abc"},
        "contention": {"contended": contended, "reason": "other processes used 1.3 of 2 cores" if contended else None},
    }
    if correct is not None:
        info["per_example_correct"] = {"encoding": "packbits-base64", "n": len(correct), "data": pack_bools(correct)}
        info["accuracy_pct"] = float(np.mean(correct) * 100)
    return ResultRow.from_extra_info(info, median_s=float(np.median(rounds)))


def test_latency_regression_needs_size_and_significance_and_a_quiet_machine():
    rng = np.random.default_rng(0)
    base = 0.010 * (1 + 0.03 * rng.standard_normal(12))
    slower = base * 1.25
    changes = {c.metric.name: c for c in metric_changes("x", _timed_row(base), _timed_row(slower), Thresholds())}
    assert changes["latency median"].regressed and "Mann-Whitney p=" in changes["latency median"].note
    same = {c.metric.name: c for c in metric_changes("x", _timed_row(base), _timed_row(base * 1.02), Thresholds())}
    assert not same["latency median"].regressed
    # beyond the threshold but from a contended run: inconclusive, never a regression
    contended = metric_changes("x", _timed_row(base), _timed_row(slower, contended=True), Thresholds())[0]
    assert not contended.regressed and contended.note.startswith("inconclusive: timing contended (after)")
    # two rounds against two: a 25% move cannot be significant at alpha 0.01
    few = metric_changes("x", _timed_row(base[:2]), _timed_row(slower[:2]), Thresholds())[0]
    assert not few.regressed and "not significant" in few.note


def test_accuracy_regression_is_tested_on_the_same_sentences():
    rng = np.random.default_rng(1)
    before = rng.random(872) < 0.9
    lost = before.copy()
    lost[np.flatnonzero(before)[:15]] = False  # 1.72 pp, all one way
    accuracy = {
        c.metric.name: c
        for c in metric_changes("x", _timed_row([1.0], correct=before), _timed_row([1.0], correct=lost), Thresholds())
    }["accuracy"]
    assert accuracy.regressed and "McNemar p=" in accuracy.note and "15 sentences lost, 0 gained" in accuracy.note
    mixed = before.copy()  # 8 lost, 2 gained: 0.69 pp, beyond 0.5 pp but not significant
    mixed[np.flatnonzero(before)[:8]] = False
    mixed[np.flatnonzero(~before)[:2]] = True
    accuracy = {
        c.metric.name: c
        for c in metric_changes("x", _timed_row([1.0], correct=before), _timed_row([1.0], correct=mixed), Thresholds())
    }["accuracy"]
    assert not accuracy.regressed and "not significant" in accuracy.note


def test_runs_with_no_configuration_in_common_are_an_error(saved_runs, tmp_path, capsys):
    from tests.reports_fixtures import save_run

    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    save_run(write_fake_suite(tmp_path / "suite"), storage, "disjoint", [case("bf16", 8)])
    assert main(["compare", "0001", "disjoint", "--storage", str(storage)]) == 2
    assert "have no configuration in common" in capsys.readouterr().err


def test_saving_under_xdist_is_refused_before_any_work():
    import subprocess
    import sys

    from tests.test_suite_options import ROOT

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "bench",
            "-m",
            "smoke",
            "--collect-only",
            "-q",
            "-n",
            "2",
            "--benchmark-save=x",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 4 and "nothing would be saved" in out.stderr


def _paired_row(technique, ratios, contended=False):
    from compressors.records.results import ResultRow

    info = {"model": "m", "technique": technique, "tier": "cpu", "batch_size": 32,
            "speed_vs_fp32": {"ratio": float(np.median(ratios)), "block_ratios": [float(r) for r in ratios]},
            "contention": {"contended": contended}}
    return ResultRow.from_extra_info(info, median_s=0.01)


def test_paired_latency_must_stand_out_of_the_between_run_spread():
    from reports.compare import latency_spread

    rng = np.random.default_rng(4)
    drift = np.exp(0.07 * rng.standard_normal(30))  # unchanged configurations, ~7% apart between runs
    drift[0] = 1 / 0.85  # within one run's blocks, clearly 15% lower: a drift of the machine, not a change
    drift[1] = 1 / 0.60  # 40% lower: a real slowdown
    pairs = []
    for i, move in enumerate(drift):
        base = 2.0 * (1 + 0.01 * rng.standard_normal(6))
        after = base / move * (1 + 0.01 * rng.standard_normal(6))
        pairs.append((_paired_row(f"t{i}", base), _paired_row(f"t{i}", after)))
    spread = latency_spread(pairs)
    assert spread["rows"] == 30
    verdicts = [metric_changes(f"t{i}", a, b, Thresholds(), spread=spread)[0] for i, (a, b) in enumerate(pairs)]
    drifted, slowed = verdicts[0], verdicts[1]
    assert not drifted.regressed and "p=0.00" in drifted.note and "within the between-run spread" in drifted.note
    assert slowed.regressed and "beyond the between-run spread" in slowed.note
    assert [i for i, v in enumerate(verdicts) if v.regressed] == [1]
    # without a spread (too few rows in common), the threshold and the rank test decide, and it says so
    alone = metric_changes("t0", *pairs[0], Thresholds())[0]
    assert alone.regressed and "between-run spread unknown" in alone.note
    # a contended row is neither judged nor counted in the spread
    assert latency_spread(pairs[:7] + [(pairs[7][0], _paired_row("t7", [1.0] * 6, contended=True))]) is None


def _run_of(name, ratios_by_config):
    """An in-memory saved run whose configurations have these paired block ratios."""
    from pathlib import Path

    from reports.runs import Run

    benchmarks = [{"extra_info": _paired_row(technique, ratios).to_extra_info(), "stats": {"median": 0.01}}
                  for technique, ratios in ratios_by_config.items()]
    return Run(Path(f"{name}.json"), {"benchmarks": benchmarks, "machine_info": {}})


def test_a_latency_regression_stands_only_if_the_re_timing_confirms_it(capsys):
    from reports.compare import NothingToCompare, retime_selection

    rng = np.random.default_rng(9)
    levels = {f"t{i}": 1.0 + 0.05 * i for i in range(30)}

    def run(name, t0=None, only=None):
        ratios = {}
        for config, level in levels.items():
            if only is not None and config not in only:
                continue
            centre = t0 if (config == "t0" and t0 is not None) else level * np.exp(0.04 * rng.standard_normal())
            ratios[config] = centre * (1 + 0.01 * rng.standard_normal(7))
        return _run_of(name, ratios)

    before, after = run("a", t0=1.0), run("b", t0=0.6)  # t0 40% slower against fp32 in B, tight blocks
    flagged = compare_runs(before, after)
    assert [c.config for c in flagged.regressions] == ["m-t0-cpu-bs32"]
    assert retime_selection(flagged) == "[m-t0-cpu-bs32]"
    hint = format_comparison(flagged)[-1]
    assert 'pytest bench -k "[m-t0-cpu-bs32]" --benchmark-save=confirm' in hint and "--confirm confirm" in hint
    assert "--confirm-baseline confirm-base" in hint
    # the re-timing shows it back where it was: a rare run of B, cleared and said so
    cleared = compare_runs(before, after, confirm=run("c", t0=1.0, only={"t0"}))
    assert cleared.regressions == []
    t0 = next(c for c in cleared.changes if c.config == "m-t0-cpu-bs32")
    assert "NOT confirmed by c" in t0.note and "rare run" in t0.note
    assert "cleared by the re-timing in c (1): m-t0-cpu-bs32" in format_comparison(cleared)
    # slower again in the re-timing: it stands, confirmed
    confirmed = compare_runs(before, after, confirm=run("c", t0=0.6, only={"t0"}))
    assert [c.config for c in confirmed.regressions] == ["m-t0-cpu-bs32"]
    assert "confirmed by c (against a: paired: its speed vs fp32 fell" in confirmed.regressions[0].note
    # A's run was the rare one (too fast): a re-timing of A's code (A2) clears it; a typical A2 keeps a real one
    lucky = compare_runs(before, after, confirm=run("c", t0=0.6, only={"t0"}), confirm_baseline=run("a2", t0=0.62))
    assert lucky.regressions == [] and "against a2: paired" in next(
        c.note for c in lucky.changes if c.config == "m-t0-cpu-bs32")
    real = compare_runs(before, after, confirm=run("c", t0=0.6, only={"t0"}), confirm_baseline=run("a2", t0=1.0))
    assert [c.config for c in real.regressions] == ["m-t0-cpu-bs32"]
    with pytest.raises(NothingToCompare, match="needs the re-timing of B's code"):
        compare_runs(before, after, confirm_baseline=run("a2", t0=1.0))
    # not re-timed: it stands, unconfirmed (a re-timing that left it out confirms nothing)
    missing = compare_runs(before, after, confirm=run("c", only={"t3"}))
    assert [c.config for c in missing.regressions] == ["m-t0-cpu-bs32"]
    assert "not re-timed in c: unconfirmed" in missing.regressions[0].note
    # a re-timing another process competed with confirms nothing either way
    contended = _run_of("c", {"t0": [0.6] * 7})
    contended.data["benchmarks"][0]["extra_info"]["contention"] = {"contended": True}
    busy = compare_runs(before, after, confirm=contended)
    assert [c.config for c in busy.regressions] == ["m-t0-cpu-bs32"] and "was contended" in busy.regressions[0].note
    with pytest.raises(NothingToCompare, match="b is one of the compared runs"):
        compare_runs(before, after, confirm=after)


def test_confirm_option_names_a_missing_run(saved_runs, tmp_path, capsys):
    retime = tmp_path / "retime.txt"
    assert main(["compare", "base", "worse", "--storage", str(saved_runs), "--write-retime", str(retime)]) == 1
    from reports.compare import retime_selection

    comparison = compare_runs(load_run(find_run("base", saved_runs)), load_run(find_run("worse", saved_runs)))
    assert retime.read_text() == retime_selection(comparison)  # "" unless the fake suite's timing moved
    assert all(c.config in retime.read_text() for c in comparison.regressions if c.metric.timing)
    assert main(["compare", "base", "worse", "--storage", str(saved_runs), "--confirm", "nosuchrun"]) == 2
    assert "no saved run 'nosuchrun'" in capsys.readouterr().err
    assert main(["compare", "base", "worse", "--storage", str(saved_runs), "--confirm", "worse"]) == 2
    assert "is one of the compared runs" in capsys.readouterr().err
    assert main(["compare", "base", "worse", "--storage", str(saved_runs), "--confirm-baseline", "base"]) == 2
    assert "needs the re-timing of B's code" in capsys.readouterr().err
    # the hint names runs by their label (0001_base), which names them back
    assert find_run("0001_base", saved_runs) == find_run("base", saved_runs) == find_run("0001", saved_runs)


def test_a_different_allocator_setting_warns_like_a_different_machine(tmp_path):
    import json

    from reports.compare import machine_difference

    def saved(name, malloc):
        compressbench = {"hardware": {"cpu": "same"}} | ({"malloc": malloc} if malloc else {})
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"machine_info": {"node": "n", "machine": "x86_64",
                                                     "compressbench": compressbench}, "benchmarks": []}))
        return load_run(path)

    old, steady = saved("0001_old", None), saved("0002_new", {"mode": "steady"})
    steady2 = saved("0003_again", {"mode": "steady"})
    warning = machine_difference(old, steady)  # saved before --malloc: glibc's dynamic thresholds
    assert warning and "compressbench.malloc.mode: 'as-is' vs 'steady'" in warning
    assert machine_difference(steady, steady2) is None


RETIME_CONFTEST = '''
import json, os
import pytest
from conftest_base import *  # noqa: F401,F403  (the fake suite's machine info)


class FakeBenchSession:
    """Stands in for bench's BenchSession: re-times a configuration with the block ratios FAKE_RETIME gives."""

    def retime(self, config_id, median_s, round_s):
        blocks = json.loads(os.environ["FAKE_RETIME"])[config_id]
        return {"speed_vs_fp32": {"ratio": sorted(blocks)[len(blocks) // 2], "block_ratios": blocks},
                "contention": {"contended": False, "reason": None}}


def pytest_configure(config):
    from bench.plugin.state import run_state

    state = run_state(config)  # present when the comparison plugin (and with it the suite's options) is loaded
    if state is not None:
        state.bench_session = FakeBenchSession()
'''


def _paired(technique: str, blocks: list[float]) -> dict:
    return case(technique, 1, speed_vs_fp32={"ratio": sorted(blocks)[2], "block_ratios": blocks})


@pytest.mark.slow
def test_latency_flagged_in_pytest_is_re_timed_and_only_a_confirmed_one_fails(tmp_path, monkeypatch, capsys):
    """--benchmark-compare judges latency once every test ran (threshold, rank test, between-run spread),
    re-times what it flagged, and fails the session only when the re-timing is flagged too."""
    import json

    from tests.reports_fixtures import FAKE_SUITE

    folder = write_fake_suite(tmp_path / "suite")
    (folder / "conftest_base.py").write_text(FAKE_SUITE)
    (folder / "conftest.py").write_text(RETIME_CONFTEST)
    storage = tmp_path / "storage"
    rng = np.random.default_rng(0)
    techniques = [f"t{i}" for i in range(12)]

    def blocks(center):
        return [round(float(center * (1 + rng.normal(0, 0.01))), 4) for _ in range(5)]

    first = [_paired(t, blocks(1.0)) for t in techniques]
    out = run_fake_suite(folder, storage, first, "--benchmark-save=a")
    assert out.returncode == 0, out.stdout + out.stderr
    slower = [_paired(t, blocks(0.6 if t == "t3" else 1.0)) for t in techniques]  # t3: 40% slower vs fp32
    plugin = ("-p", "reports.pytest_plugin", "--benchmark-compare=0001")

    monkeypatch.setenv("FAKE_RETIME", json.dumps({"tiny-t3-cpu-bs1": blocks(1.0)}))  # a rare run: fast again
    out = run_fake_suite(folder, storage, slower, *plugin, "--benchmark-save=rare")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 configuration(s) flagged slower, re-timed at the end of the session: 0 confirmed, 1 cleared" in out.stdout
    assert "cleared: tiny-t3-cpu-bs1" in out.stdout and "NOT confirmed by its re-timing" in out.stdout
    (saved,) = storage.glob("*/*_rare.json")
    retimed = [b["extra_info"]["retimed"] for b in json.loads(saved.read_text())["benchmarks"]
               if "retimed" in b["extra_info"]]
    assert [(r["against"], r["verdict"]) for r in retimed] == [("0001_a", "cleared")]
    # reports compare reaches the same verdict from the saved re-timing
    assert main(["compare", "0001", "0002", "--storage", str(storage)]) == 0
    assert "cleared by B's re-timing at the end of its session (1): tiny-t3-cpu-bs1" in capsys.readouterr().out

    monkeypatch.setenv("FAKE_RETIME", json.dumps({"tiny-t3-cpu-bs1": blocks(0.6)}))  # slow again: a real one
    out = run_fake_suite(folder, storage, slower, *plugin)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 confirmed, 0 cleared" in out.stdout and "REGRESSED: tiny-t3-cpu-bs1" in out.stdout
    assert "confirmed by its re-timing at the end of this session (against 0001_a" in out.stdout

    monkeypatch.setenv("FAKE_RETIME", "{}")  # the re-timing fails: the regression stands, unconfirmed
    out = run_fake_suite(folder, storage, slower, *plugin)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 unconfirmed (standing)" in out.stdout and "REGRESSED (unconfirmed): tiny-t3-cpu-bs1" in out.stdout

    out = run_fake_suite(folder, storage, first, *plugin)  # nothing slower: said so
    assert out.returncode == 0, out.stdout + out.stderr
    assert "compressbench latency vs 0001_a: no configuration flagged slower (12 compared, bar" in out.stdout

    out = run_fake_suite(folder, storage, slower, *plugin, "--no-retime")  # the gate off
    assert out.returncode == 0 and "flagged slower" not in out.stdout, out.stdout + out.stderr
