"""The suite's options: every flag from one table (:data:`OPTIONS`), resolved once per run.

Each flag defaults to None ("not given") on the command line so that the settings table
(``[tool.compressbench]`` or ``--compressbench-config FILE``) and the environment can stand below it;
the defaults live once, in the table. :func:`setting` is the one reader of a resolved value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.plugin.state import RunState, run_state
from compressors.core import settings as core_settings
from compressors.core.settings import SettingsError, find_table_file, index_options, read_table, resolve_settings
from compressors.records.metric_table import compare_options

# The suite's one options table: its settings (compressors.core.settings.OPTIONS) and one --compare-* threshold per
# compared metric of the table of metrics. --help, [tool.compressbench], the environment and the generated options
# reference (python -m reports options) all read it.
OPTIONS = core_settings.OPTIONS + compare_options()
BY_NAME = index_options(OPTIONS)[0]


def pytest_addoption(parser):
    for option in OPTIONS:
        kwargs = {"default": None, "help": option.full_help}
        if option.switch:
            kwargs["action"] = "store_true"
        if option.choices:
            kwargs["choices"] = option.choices
        parser.getgroup(option.group).addoption(option.flag, **kwargs)


def run_settings(config):
    """The run's settings: defaults < environment < [tool.compressbench] < command line (a bad value is one
    line: pytest.UsageError naming where it came from, the key and what is valid)."""
    explicit = config.getoption("--compressbench-config")
    try:
        path = find_table_file(Path(str(config.rootpath)), Path(str(config.invocation_params.dir)), explicit)
        table = read_table(path, required=bool(explicit)) if path else {}
        return resolve_settings({o.name: config.getoption(o.flag) for o in OPTIONS}, table, path, OPTIONS)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None


def setting(config, name: str):
    """One resolved setting of this run, by key (``max_build_seconds``) or flag (``--max-build-seconds``); on
    a config the plugin did not configure (a stand-in config in a unit test) the command line's value, else the
    table's default."""
    key = name.lstrip("-").replace("-", "_")
    if key not in BY_NAME:
        raise KeyError(f"{name!r} is not a setting of the suite (bench.plugin.options.OPTIONS); "
                       "read pytest's own options with option_value()")
    state = run_state(config)
    if state is not None and state.settings is not None:
        return state.settings.values[key]
    try:
        value = config.getoption(BY_NAME[key].flag)
    except (ValueError, AttributeError):
        value = None
    return BY_NAME[key].default if value is None else value


def option_value(config, name: str, stand_in=None):
    """An option of pytest or of another plugin (``verbose``, ``benchmark_min_rounds``), as the session parsed
    it, defaults included; ``stand_in`` only for a stand-in config in a unit test, which has no parser."""
    try:
        value = config.getoption(name)
    except (ValueError, AttributeError):
        return stand_in
    return stand_in if value is None else value


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from bench.plugin.state import RUN_STATE

    config.stash[RUN_STATE] = RunState(settings=run_settings(config))
