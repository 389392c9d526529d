import json

import pytest

from compressors.records.tables import format_table
from reports.__main__ import main
from reports.runs import RunNotFound, find_run, rows_from_run

ROW = {"model": "m", "technique": "fp32", "tier": "cpu", "batch_size": 1, "accuracy_pct": 90.0,
       "accuracy_drop_pp": 0.0, "size_bytes": 2**20, "size_ratio_vs_fp32": 1.0, "peak_memory_bytes": 3 * 2**20}


def save(storage, name, rows):
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = [{"name": f"t[{i}]", "stats": {"median": 0.002}, "extra_info": r} for i, r in enumerate(rows)]
    benchmarks.append({"name": "unrelated", "stats": {"median": 1.0}, "extra_info": {}})
    (folder / f"{name}.json").write_text(json.dumps({"benchmarks": benchmarks}))


def test_latest_and_named_runs(tmp_path):
    save(tmp_path, "0001_a", [ROW])
    save(tmp_path, "0002_b", [ROW, {**ROW, "technique": "onnx-int8", "accuracy_drop_pp": 0.5}])
    assert find_run(None, tmp_path).name == "0002_b.json"
    assert find_run("0001", tmp_path).name == "0001_a.json" and find_run("a", tmp_path).name == "0001_a.json"
    rows = rows_from_run(find_run(None, tmp_path))
    assert len(rows) == 2 and rows[0]["median_s"] == 0.002
    table = format_table(rows)
    assert "m-onnx-int8-cpu-bs1" in table[2] and "2.00" in table[1] and "3.0" in table[1]


def test_missing_runs_say_what_to_do(tmp_path, capsys):
    with pytest.raises(RunNotFound, match="--benchmark-save"):
        find_run(None, tmp_path)
    save(tmp_path, "0001_a", [ROW])
    assert main(["table", "0042", "--storage", str(tmp_path)]) == 2
    assert "saved: 0001_a" in capsys.readouterr().err


def test_language_model_rows_show_perplexity_rise_and_time_per_token(tmp_path):
    lm = {**ROW, "model": "lm", "accuracy_pct": None, "accuracy_drop_pp": None, "perplexity": 28.1,
          "baseline_perplexity": 27.0, "perplexity_increase_pct": 4.074}
    save(tmp_path, "0001_a", [{**lm, "scenario": "prefill512"}, {**lm, "scenario": "gen32", "per_token_s": 0.0912}])
    table = format_table(rows_from_run(find_run(None, tmp_path)))
    gen, prefill = table[1], table[2]
    assert gen.startswith("lm-fp32-cpu-bs1-gen32 ") and "91.20" in gen and "28.100" in gen and "+4.07%" in gen
    assert prefill.startswith("lm-fp32-cpu-bs1-prefill512 ") and "91.20" not in prefill


def test_table_ends_with_where_the_runs_time_went(tmp_path, capsys):
    from compressors.machine.timing import time_breakdown

    save(tmp_path, "0001_old", [ROW])  # saved before runs recorded their time: no line
    assert main(["table", "0001", "--storage", str(tmp_path)]) == 0
    assert "time:" not in capsys.readouterr().out
    path = tmp_path / "Linux-CPython-3.11-64bit" / "0002_new.json"
    save(tmp_path, "0002_new", [ROW])
    data = json.loads(path.read_text())
    data["compressbench"] = {"partial": False, "time_s": time_breakdown([{"timed": 60.0, "paired": 30.0}], 100.0)}
    path.write_text(json.dumps(data))
    assert main(["table", "0002", "--storage", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "time: 100 s in all: timed rounds 60 s, paired fp32 blocks 30 s (+43% over the rest of the run), "
        "other 10 s (collection, kernel probe, reporting)")
