"""The one options table (bench.plugin.options.OPTIONS): number settings validated wherever they come from,
every flag of the suite and of the in-run comparison allowed in [tool.compressbench]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.plugin.options import OPTIONS
from compressors.core.settings import BY_NAME, SettingsError
from compressors.core.settings import resolve_settings as resolve_core


def resolve_settings(cli, table=None, table_file=None):
    """The suite's resolution: over its whole options table, the comparison thresholds included."""
    return resolve_core(cli, table, table_file, OPTIONS)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf", "ten"])
def test_a_bad_build_limit_on_the_command_line_is_one_line_naming_flag_and_range(value):
    with pytest.raises(SettingsError) as err:
        resolve_settings({"max_build_seconds": value})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--max-build-seconds: max-build-seconds = ")
    assert message.endswith("expected a finite number of seconds > 0")


@pytest.mark.parametrize("value", [float("nan"), -1, 0, "soon", True])
def test_a_bad_number_in_the_settings_table_names_the_file_and_key(tmp_path, value):
    table_file = tmp_path / "pyproject.toml"
    with pytest.raises(SettingsError, match=r"pyproject\.toml: max-measure-seconds = .*: expected a finite number "
                                            r"of seconds > 0$"):
        resolve_settings({}, {"max-measure-seconds": value}, table_file)
    assert resolve_settings({}, {"max-measure-seconds": "12"}, table_file).max_measure_seconds == 12.0


def test_a_bad_number_in_the_environment_names_the_variable(monkeypatch):
    # a number option read from a variable: made for the test (the table has none today), read the same way
    import dataclasses

    with_env = dataclasses.replace(BY_NAME["max_build_seconds"], env="COMPRESSBENCH_TEST_MAX_BUILD")
    table = tuple(with_env if o.name == with_env.name else o for o in OPTIONS)
    monkeypatch.setenv("COMPRESSBENCH_TEST_MAX_BUILD", "-3")
    with pytest.raises(SettingsError, match=r"^\$COMPRESSBENCH_TEST_MAX_BUILD: max-build-seconds = '-3': expected a "
                                            r"finite number of seconds > 0$"):
        resolve_core({}, options=table)
    monkeypatch.setenv("COMPRESSBENCH_TEST_MAX_BUILD", "60")
    resolved = resolve_core({}, options=table)
    assert resolved.max_build_seconds == 60.0
    assert resolved.sources["max_build_seconds"] == "$COMPRESSBENCH_TEST_MAX_BUILD"


def test_a_comparison_threshold_below_zero_is_refused_and_zero_is_allowed():
    with pytest.raises(SettingsError, match=r"--compare-size-pct: .* expected a finite number of percent >= 0$"):
        resolve_settings({"compare_size_pct": "-1"})
    assert resolve_settings({"compare_size_pct": "0"}).compare_size_pct == 0.0


def test_comparison_flags_live_in_the_settings_table_and_the_config_flag_does_not(tmp_path):
    table_file = tmp_path / "pyproject.toml"
    resolved = resolve_settings({}, {"compare-accuracy-pp": 0.25, "no-retime": True}, table_file)
    assert resolved.compare_accuracy_pp == 0.25 and resolved.no_retime is True
    assert resolved.sources["compare_accuracy_pp"] == str(table_file)
    with pytest.raises(SettingsError, match="unknown key 'compressbench-config'"):
        resolve_settings({}, {"compressbench-config": "x.toml"}, table_file)


def test_the_environment_gives_data_and_cache_folders_and_the_run_records_where_from(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMPRESSBENCH_CACHE", str(tmp_path / "cache"))
    resolved = resolve_settings({"cache_dir": str(tmp_path / "flag-cache")})
    assert resolved.data_dir == str(tmp_path / "data") and resolved.sources["data_dir"] == "$COMPRESSBENCH_DATA_DIR"
    assert resolved.cache_dir == str(tmp_path / "flag-cache") and resolved.sources["cache_dir"] == "command line"


def test_every_compared_metric_has_its_threshold_option_with_the_compare_cli_default():
    from compressors.records.metric_table import compared
    from reports.compare import Thresholds

    thresholds = Thresholds()
    options = {option.name: option for option in OPTIONS}
    for metric in compared():
        option = options[f"compare_{metric.compare.threshold}"]
        assert option.flag == metric.compare.option
        assert option.default == getattr(thresholds, metric.compare.threshold) == metric.compare.default


def test_a_negative_build_limit_stops_the_suite_before_collection_in_one_line(tmp_path):
    """The whole path: pytest's usage error, exit 4, one line, no test runs (it used to fail every test inside
    signal.setitimer)."""
    (tmp_path / "pyproject.toml").write_text('[tool.compressbench]\nmax-build-seconds = "nan"\n')
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "bench"), "-m", "cpu",
                          "--collect-only", "-q", "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert error_lines == [f"ERROR: {tmp_path / 'pyproject.toml'}: max-build-seconds = 'nan': expected a finite "
                           "number of seconds > 0"], out.stderr


def test_a_named_model_table_resolves_its_path_relative_to_the_file_and_checks_its_keys(tmp_path):
    table_file = tmp_path / "pyproject.toml"
    resolved = resolve_settings({}, {"model": {"reviews": {"path": "./models/m", "label-column": "gold"}}}, table_file)
    assert resolved.named_models["reviews"] == {"path": str(tmp_path / "models" / "m"), "label_column": "gold"}
    with pytest.raises(SettingsError, match=r"\[tool.compressbench.model.reviews\]: path = 3: expected a non-empty"):
        resolve_settings({}, {"model": {"reviews": {"path": 3}}}, table_file)
