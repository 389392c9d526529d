"""``python -m reports build``: the HTML page and Markdown summary, from runs saved by pytest-benchmark."""

import os
import shutil
import struct
from pathlib import Path

import pytest

from reports.__main__ import main
from reports.html import BadOption, BuildOptions, entries_by_group, pareto_front, radar_axes, recommendation
from reports.runs import find_run, load_run
from reports.screenshot import Rendered, chromium, render

ROOT = Path(__file__).resolve().parents[1]


def tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_build_writes_page_and_summary_and_refuses_to_overwrite(saved_runs, tmp_path, capsys):
    before = tree(saved_runs)
    out = tmp_path / "report"
    assert main(["build", "0001", "0002", "--storage", str(saved_runs), "--out", str(out)]) == 0
    assert f"HTML report: {out / 'report.html'}" in capsys.readouterr().out
    page, summary = (out / "report.html").read_text(), (out / "summary.md").read_text()
    assert "<script" in page and "src=\"http" not in page  # self-contained: plotly.js inlined
    for text in ("tiny on cpu", "bs32 p99 ms", "bs1 speed x", "training s", "Recommendation for cpu",
                 "Weighted score", "2.13.0+cpu", "### 0002_worse"):
        assert text in summary
    # one model/device group, both runs in it: Pareto, radar, parallel coordinates, sensitivity
    assert page.count('class="plotly-graph-div"') == 4
    assert "| onnx-int8 | 0002_worse | 89.00 | 1.00 |" in summary
    # fp32 bs1 of 0002 has no memory: n/a, the rest still reported
    assert "n/a" in summary
    assert tree(saved_runs) == before  # nothing written into the storage
    assert main(["build", "0001", "--storage", str(saved_runs), "--out", str(out)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    assert main(["build", "0001", "--storage", str(saved_runs), "--out", str(out), "--force"]) == 0


def test_default_is_latest_run_and_default_out_is_under_reports(saved_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--storage", str(saved_runs)]) == 0
    assert (tmp_path / "reports" / "out" / "0003_other" / "report.html").is_file()
    assert "0003_other.json" in capsys.readouterr().out


def test_empty_storage_and_corrupt_run(saved_runs, tmp_path, capsys):
    assert main(["build", "--storage", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no saved runs in" in capsys.readouterr().err
    storage = tmp_path / "storage"
    shutil.copytree(saved_runs, storage)
    bad = find_run("0002", storage)
    bad.write_text("not json")
    assert main(["build", "0001", "0002", "0003", "--storage", str(storage), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert f"skipped {bad}: not a readable pytest-benchmark JSON file" in captured.err
    assert "0001_base" in (tmp_path / "o" / "summary.md").read_text()
    assert main(["build", "0002", "--storage", str(storage), "--out", str(tmp_path / "p")]) == 2
    assert "none of the runs could be read" in capsys.readouterr().err


def test_bad_options_are_named(saved_runs, tmp_path, capsys):
    assert main(["build", "--storage", str(saved_runs), "--weights", "1,2", "--out", str(tmp_path / "o")]) == 2
    assert "weights (1.0, 2.0): need three numbers" in capsys.readouterr().err
    assert main(["build", "--storage", str(saved_runs), "--out", str(saved_runs / "x")]) == 2
    assert "inside the benchmark storage" in capsys.readouterr().err
    with pytest.raises(BadOption):
        BuildOptions(max_drop=-1)


def test_score_recommendation_radar_and_pareto(saved_runs):
    ((_, group),) = entries_by_group([load_run(find_run("0001", saved_runs))], BuildOptions()).items()
    by_name = {e.technique: e for e in group}
    assert by_name["fp32"].score == pytest.approx(1.0)  # every term is 1 for the baseline
    onnx = by_name["onnx-int8"]
    assert onnx.terms["CR"] == pytest.approx(4.0) and onnx.terms["A"] == pytest.approx(1.0)
    assert recommendation(group, BuildOptions(max_drop=1.0)) is not None
    axes = radar_axes(group, 32)
    assert axes["accuracy"][0] == pytest.approx(0.1 + 0.9 * 0.8)  # 90% on the 50..100 range
    assert all(0.1 - 1e-9 <= v <= 1 + 1e-9 for values in axes.values() for v in values), axes
    assert min(axes["size"]) == pytest.approx(0.1) and max(axes["size"]) == pytest.approx(1.0)
    assert pareto_front([(1, 80), (2, 90), (3, 85), (4, 95)], higher_is_better=True) == [0, 1, 3]


def _browser_or_skip():
    """Skip (or, where CI requires the browser, fail) when playwright or chromium is missing."""
    required = os.environ.get("COMPRESSBENCH_REQUIRE_CHROMIUM") == "1"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip("the playwright package is not installed: pip install -e '.[bench]'")
    if not chromium():
        if required:
            pytest.fail("COMPRESSBENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH: apt-get install chromium (CI installs it and runs this test)")


@pytest.mark.slow
def test_page_renders_in_headless_chromium(saved_runs, tmp_path):
    """Every chart drew something and the console stayed clean (CI installs Debian's chromium)."""
    _browser_or_skip()
    out = tmp_path / "report"
    assert main(["build", "0001", "0002", "--storage", str(saved_runs), "--out", str(out)]) == 0
    rendered = render(out / "report.html", interact=lambda page: page.click("table.sortable th:nth-child(3)"))
    assert rendered.errors == []  # sorting works without errors, too
    assert len(rendered.charts) == 4
    assert rendered.blank_charts == [], rendered.charts


@pytest.mark.slow
def test_screenshot_of_the_committed_sample_runs_report(tmp_path, capsys):
    """docs/img/report.png is made by this command from docs/runs/cpu-sample.json (docs/reports.md)."""
    _browser_or_skip()
    png = tmp_path / "img" / "report.png"
    sample = ROOT / "docs" / "runs" / "cpu-sample.json"
    assert main(["screenshot", str(sample), "--out", str(png), "--height", "1530"]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1280, 1530)
    assert 20_000 < len(data) < 300_000  # a drawn page, small enough to commit
    assert f"screenshot: {png}" in capsys.readouterr().out


def test_screenshot_without_a_browser_is_one_line_naming_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("reports.screenshot.chromium", lambda: None)
    png = tmp_path / "report.png"
    assert main(["screenshot", str(ROOT / "docs" / "runs" / "cpu-sample.json"), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "apt-get install chromium" in err or "pip install" in err
    assert not png.exists()


def test_screenshot_of_a_page_that_logged_an_error_is_refused_and_removed(tmp_path, monkeypatch, capsys):
    def broken(page, png, **_):
        png.write_bytes(b"\x89PNG\r\n\x1a\n")  # the picture is taken before the page is judged
        return Rendered(errors=["Uncaught ReferenceError: Plotly is not defined"], charts=[])

    monkeypatch.setattr("reports.screenshot.render", broken)
    png = tmp_path / "report.png"
    assert main(["screenshot", str(ROOT / "docs" / "runs" / "cpu-sample.json"), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "did not render cleanly" in err and "Plotly is not defined" in err
    assert not png.exists()  # no picture of a broken page is left to be published


def test_the_runs_section_says_where_each_runs_time_went(tmp_path):
    from compressors.machine.timing import time_breakdown
    from reports.html import _machine_lines
    from reports.runs import Run

    spent = time_breakdown([{"build": 30.0, "timed": 500.0, "paired": 300.0}], wall_s=900.0)
    lines = dict(_machine_lines(Run(tmp_path / "0003_night.json", {"compressbench": {"time_s": spent}})))
    assert lines["time"].startswith("900 s in all: building (or reading the cache) 30 s, timed rounds 500 s, "
                                    "paired fp32 blocks 300 s (+50% over the rest of the run), other 70 s")
    assert dict(_machine_lines(Run(tmp_path / "0001_old.json", {})))["time"].startswith("n/a")
