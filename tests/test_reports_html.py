"""``python -m reports build``: the HTML page and Markdown summary, from runs saved by pytest-benchmark."""

import os
import shutil

import pytest

from reports.__main__ import main
from reports.html import BadOption, BuildOptions, entries_by_group, pareto_front, radar_axes, recommendation
from reports.runs import find_run, load_run


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


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_page_renders_in_headless_chromium(saved_runs, tmp_path):
    """Every chart drew something and the console stayed clean (CI installs Debian's chromium)."""
    required = os.environ.get("COMPRESSBENCH_REQUIRE_CHROMIUM") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("the playwright package is not installed: pip install -e '.[bench]'")
    if not _chromium():
        if required:
            pytest.fail("COMPRESSBENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH: apt-get install chromium (CI installs it and runs this test)")
    out = tmp_path / "report"
    assert main(["build", "0001", "0002", "--storage", str(saved_runs), "--out", str(out)]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium())
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        drawn = page.evaluate("""() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => {
            const box = d.getBoundingClientRect();
            const marks = d.querySelectorAll('path.point, path.js-line, path.js-fill').length;
            return {id: d.id, svg: d.querySelectorAll('svg.main-svg').length, marks: marks, h: box.height};
        })""")
        page.click("table.sortable th:nth-child(3)")  # sorting works without errors
        browser.close()
    assert errors == []
    assert len(drawn) == 4
    blank = [d for d in drawn if not (d["svg"] and d["marks"] > 0 and d["h"] > 100)]
    assert blank == [], drawn


def test_the_runs_section_says_where_each_runs_time_went(tmp_path):
    from compressors.machine.timing import time_breakdown
    from reports.html import _machine_lines
    from reports.runs import Run

    spent = time_breakdown([{"build": 30.0, "timed": 500.0, "paired": 300.0}], wall_s=900.0)
    lines = dict(_machine_lines(Run(tmp_path / "0003_night.json", {"compressbench": {"time_s": spent}})))
    assert lines["time"].startswith("900 s in all: building (or reading the cache) 30 s, timed rounds 500 s, "
                                    "paired fp32 blocks 300 s (+50% over the rest of the run), other 70 s")
    assert dict(_machine_lines(Run(tmp_path / "0001_old.json", {})))["time"].startswith("n/a")
