"""The run's settings: one object built once, read by the suite's conftest, the harness and the reports.

Precedence, lowest first: the defaults below < a ``[tool.compressbench]`` table in the
``pyproject.toml`` of the folder pytest runs from (or the file ``--compressbench-config FILE``
names: its ``[tool.compressbench]`` table, or its top level) < the command line. Keys in a table
are the flags without their dashes (``max-build-seconds = 600``; underscores work too); paths in a
table are relative to the file that holds it.

A table may also name models with their data, so a team's own model is one word on the command
line (``--models reviews``)::

    [tool.compressbench.model.reviews]
    path = "./models/reviews-minilm"      # or hub = "org/name"
    dataset-train = "data/train.csv"
    dataset-eval = "data/dev.csv"
    text-column = "review"
    label-column = "sentiment"

Nothing here knows pytest: :func:`resolve_settings` takes what the command line gave (None where a
flag was not given) and returns a :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from compressors import CompressbenchError

CONFIG_TABLE = ("tool", "compressbench")
SEARCH_GROUP = "compressbench search"
COMPARE_GROUP = "compressbench comparison (with --benchmark-compare)"


class SettingsError(CompressbenchError):
    """A settings table or value is malformed; the message names the file, the key and what is valid."""


def _comma_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise ValueError("a comma list or a list of names")


def _number(value) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("a number") from None


number = _number  # a number option's parser, for options declared in other modules (its range is the option's)


def _range_text(option: Option) -> str:
    """What a number option accepts, in words: ``a finite number of seconds > 0``."""
    unit = f" of {option.unit}" if option.unit else ""
    bounds = []
    if option.minimum is not None:
        bounds.append(f"{'>' if option.exclusive_minimum else '>='} {option.minimum:g}")
    if option.maximum is not None:
        bounds.append(f"<= {option.maximum:g}")
    return f"a finite number{unit}" + (" " + " and ".join(bounds) if bounds else "")


def _check_range(option: Option, number: float) -> None:
    """A number option's value is finite and inside its range (ValueError naming the range otherwise): a
    negative or NaN build limit passed the float parse and then failed every test inside signal.setitimer."""
    low, high = option.minimum, option.maximum
    if (not math.isfinite(number) or (low is not None and (number <= low if option.exclusive_minimum else number < low))
            or (high is not None and number > high)):
        raise ValueError(_range_text(option))


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its attribute ``name``, command-line ``flag``, ``default``, how a value is read
    (``parse`` raises ValueError saying what it expects), whether it is a path, and its help."""

    name: str
    flag: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    choices: tuple[str, ...] | None = None
    path: bool = False
    switch: bool = False  # a store_true flag
    env: str | None = None  # an environment variable that gives the value where the table and the flag do not
    group: str = "compressbench"  # the --help section: the suite, or the in-run comparison with a saved run
    in_table: bool = True  # may live in [tool.compressbench] (not the flag that names the settings file)
    unit: str | None = None  # a number option's unit, said in its help and in a range error
    minimum: float | None = None  # a number option's range (finite always)
    exclusive_minimum: bool = False
    maximum: float | None = None
    words: tuple[str, ...] = ()  # values of a path option that are words, not paths (kept as written)

    def __post_init__(self):
        if not self.flag.startswith("--") or self.name != self.key.replace("-", "_"):
            raise ValueError(f"option {self.name!r}: flag {self.flag!r} must be --{self.name.replace('_', '-')}")
        if (self.minimum is not None or self.maximum is not None or self.unit) and self.parse is not _number:
            raise ValueError(f"option {self.name!r}: a range or unit is for number options")

    @property
    def key(self) -> str:
        return self.flag.lstrip("-")

    @property
    def metavar(self) -> str:
        """How the value is written in the options reference (``--max-build-seconds SECONDS``)."""
        if self.choices:
            return "|".join(self.choices)
        if self.parse is _number:
            return {"percent": "PCT", "percentage points": "PP"}.get(self.unit or "", (self.unit or "N").upper())
        if self.parse is _comma_list:
            return "NAME,NAME"
        return "PATH" if self.path else "VALUE"

    @property
    def range_text(self) -> str | None:
        """A number option's valid values in words (``a finite number of seconds > 0``); None for others."""
        return _range_text(self) if self.parse is _number else None

    @property
    def full_help(self) -> str:
        """The help text with the valid range and the default (``--help`` and the generated options table)."""
        extra = []
        if self.parse is _number:
            extra.append(_range_text(self))
        if self.default not in (None, False):
            extra.append(f"default: {self.default:g}" if isinstance(self.default, float) else
                         f"default: {self.default}")
        return self.help + (f" ({'; '.join(extra)})" if extra else "")


OPTIONS: tuple[Option, ...] = (
    Option("data_dir", "--data-dir", None, _text, "where SST-2 and WikiText-2 come from: a GLUE/WikiText mirror "
           "folder, 'hub' (the Hugging Face Hub) or 'embedded' (default: $COMPRESSBENCH_DATA_DIR, else the copy "
           "shipped with compressbench)", path=True, env="COMPRESSBENCH_DATA_DIR", words=("hub", "embedded")),
    Option("cache_dir", "--cache-dir", None, _text, "artifact cache folder (default: $COMPRESSBENCH_CACHE, else "
           "$XDG_CACHE_HOME/compressbench or ~/.cache/compressbench)", path=True, env="COMPRESSBENCH_CACHE"),
    Option("models", "--models", None, _comma_list, "comma list of models: registered names, local folders "
           "(./my-model, /abs/path), hub ids (hub:org/name) or models named in the settings table (default: all "
           "registered)"),
    Option("techniques", "--techniques", None, _comma_list, "comma list of techniques or chains (a+b) to "
           "benchmark (default: the standard matrix)"),
    Option("device", "--device", None, _text, "restrict the run to one device: cpu, cuda (every GPU tier) or "
           "cuda:N (that GPU and its tier)"),
    Option("extended", "--extended", False, _flag, "also run what the default run leaves out for time: "
           "whole-test-set perplexity and techniques that torch.compile when loaded", switch=True),
    Option("run_slow_kernels", "--run-slow-kernels", False, _flag, "run configurations whose kernel the probe "
           "found to be a reference fallback here (skipped by default)", switch=True),
    Option("max_build_seconds", "--max-build-seconds", 1800.0, _number, "stop building one artifact (fine-tune, "
           "export, calibration) after this long and fail it", unit="seconds", minimum=0, exclusive_minimum=True),
    Option("max_measure_seconds", "--max-measure-seconds", 900.0, _number, "stop one configuration's isolated "
           "quality/memory measurement after this long and fail it", unit="seconds", minimum=0,
           exclusive_minimum=True),
    Option("malloc", "--malloc", "steady", _text, "glibc allocator of the timing process: steady (freed heap "
           "blocks up to 32 MiB reused, no trimming, so a timing does not depend on what ran before) or as-is "
           "(glibc's dynamic thresholds); MALLOC_*_ / GLIBC_TUNABLES / a preloaded allocator always stand",
           choices=("steady", "as-is")),
    Option("remeasure", "--remeasure", False, _flag, "measure quality and memory again even where this machine "
           "already measured the same artifact", switch=True),
    Option("on_fallback", "--on-fallback", "fail", _text, "a GPU configuration found (partly) on the CPU: fail, "
           "xfail, or warn and keep its numbers", choices=("fail", "xfail", "warn")),
    Option("trust_remote_code", "--trust-remote-code", False, _flag, "let models given by path or hub id run "
           "their own code (auto_map in config.json): passed to config, tokenizer and model alike", switch=True),
    Option("dataset", "--dataset", None, _text, "models given by path or hub id (classifiers): a labelled file "
           "(csv, tsv, json, jsonl, parquet) to evaluate on; nothing trains or calibrates on it", path=True),
    Option("dataset_eval", "--dataset-eval", None, _text, "the labelled file to evaluate on (same as --dataset)",
           path=True),
    Option("dataset_train", "--dataset-train", None, _text, "a labelled file to train and calibrate on "
           "(fine-tunes, static quantization, distillation, layer sensitivity); without it those are skipped",
           path=True),
    Option("text_column", "--text-column", "sentence", _text, "the text column of --dataset/--dataset-train"),
    Option("text_pair_column", "--text-pair-column", None, _text, "a second text column, encoded as a true "
           "pair with the first (NLI, paraphrase)"),
    Option("label_column", "--label-column", "label", _text, "the label column: integers in [0, num_labels) "
           "or the model's label names (case-insensitive)"),
    Option("label_map", "--label-map", None, _text, "how the file's string labels map to the model's ids, "
           "e.g. negative=0,positive=1 (needed when the model names its labels LABEL_0, LABEL_1, ...)"),
    Option("text_file", "--text-file", None, _text, "models given by path or hub id (causal LMs): a plain text "
           "file to score perplexity on, read as WikiText-2 raw test is (default: WikiText-2 test)", path=True),
    Option("text_file_train", "--text-file-train", None, _text, "a plain text file to calibrate causal LMs on "
           "(data-aware weight compression); without it, with --text-file, those are skipped", path=True),
    Option("cache_remote", "--cache-remote", None, _text, "a shared remote artifact cache, an fsspec URL "
           "(s3://bucket/prefix, gs://..., az://..., file:///mnt/...): a local miss is pulled from it, and in rw "
           "mode a local build is pushed; credentials and endpoints from the storage library's environment",
           env="COMPRESSBENCH_CACHE_REMOTE"),
    Option("cache_remote_mode", "--cache-remote-mode", "ro", _text, "ro: pull only; rw: pull and push (for CI on "
           "protected branches)", choices=("ro", "rw")),
    Option("cache_remote_required", "--cache-remote-required", False, _flag, "a remote cache fault (unreachable, "
           "denied, a corrupt entry) is an error instead of a warning and a local build", switch=True),
    Option("budgets", "--budgets", None, _text, "a TOML file of budgets over bench/budgets.toml, in its form "
           "([technique.models.<slug>] for a model given by path)", path=True),
    Option("compressbench_config", "--compressbench-config", None, _text, "a TOML file whose [tool.compressbench] "
           "table (or top level) holds settings and named models (default: the [tool.compressbench] table of "
           "./pyproject.toml); the command line wins over it", path=True, in_table=False),
    # The accuracy-aware search (bench/plugin/search.py, compressors/search/): before the tests, each technique
    # family's knob is searched under the limit on held-apart rows, and what it finds runs as ordinary tests.
    Option("search", "--search", False, _flag, "before the tests, search each technique family's knob "
           "(layerdrop-K, l1-P, dynamic-int8-fbN, ...; --techniques narrows by family) for the fastest (or "
           "smallest) configuration within --max-drop / --max-ppl-rise on held-apart rows, then benchmark the "
           "choices, chains and frontier as ordinary tests", switch=True, group=SEARCH_GROUP),
    Option("max_drop", "--max-drop", None, _number, "the search's limit for classifiers: accuracy drop vs fp32",
           unit="percentage points", minimum=0, maximum=100, group=SEARCH_GROUP),
    Option("max_ppl_rise", "--max-ppl-rise", None, _number, "the search's limit for causal LMs: perplexity "
           "rise vs fp32", unit="percent", minimum=0, group=SEARCH_GROUP),
    Option("search_objective", "--search-objective", "latency", _text, "what the search minimises within the "
           "limit: latency (paired speed vs fp32), size (bytes on disk) or memory (resident bytes of the loaded "
           "model)", choices=("latency", "size", "memory"), group=SEARCH_GROUP),
    Option("search_rule", "--search-rule", "confident", _text, "how a trial near the limit is decided: "
           "confident (it passes only when its interval on the held-apart rows is within the limit) or point "
           "(where the interval straddles the limit after all rows, the point estimate decides)",
           choices=("confident", "point"), group=SEARCH_GROUP),
    Option("search_budget", "--search-budget", None, _number, "stop the search after this long and benchmark "
           "what it found so far (saying so)", unit="minutes", minimum=0, exclusive_minimum=True,
           group=SEARCH_GROUP),
    Option("search_out", "--search-out", None, _text, "where the search writes the names it chose, for "
           "--techniques @FILE to replay without searching (default: .compressbench/search-<time>.txt; an "
           "existing file is never overwritten)", path=True, group=SEARCH_GROUP),
    # The in-run comparison with a saved run (--benchmark-compare; reports/pytest_plugin.py). Its thresholds,
    # one --compare-* flag per compared metric, come from the table of metrics (compressors.records.metric_table:
    # compare_options); the suite's whole table is bench.plugin.options.OPTIONS.
    Option("no_retime", "--no-retime", False, _flag, "no latency gate: do not judge latency against the compared "
           "run nor re-time the configurations flagged slower at the end of the session", switch=True,
           group=COMPARE_GROUP),
)


def index_options(options: tuple[Option, ...]) -> tuple[dict[str, Option], dict[str, Option]]:
    """``(by name, by key or name)`` of an options table; a name given twice is an error."""
    by_name = {o.name: o for o in options}
    if len(by_name) != len(options):
        raise ValueError("an options table names an option twice")
    return by_name, {o.key: o for o in options} | by_name


BY_NAME, BY_KEY = index_options(OPTIONS)
# Keys of a named model's table ([tool.compressbench.model.NAME]).
MODEL_KEYS = ("path", "hub", "trust-remote-code", "dataset", "dataset-eval", "dataset-train", "text-column",
              "text-pair-column", "label-column", "label-map", "text-file", "text-file-train")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings: ``values`` by option name, ``sources`` saying where each came from
    (``default``, the table's file, or ``command line``), and the table's named models."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    named_models: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    table_file: str | None = None

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        """What the saved run records: every value that is not a default, with where it came from."""
        return {name: {"value": value, "from": self.sources[name]} for name, value in self.values.items()
                if self.sources[name] != "default"}


def read_table(path: Path, required: bool = False) -> dict:
    """The ``[tool.compressbench]`` table of ``path`` (a pyproject.toml or a file of its own, where the top
    level is the table when it has no ``[tool.compressbench]``); {} when a pyproject.toml has none."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise SettingsError(f"--compressbench-config {path}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: not a readable TOML file: {exc}") from None
    table = raw
    for part in CONFIG_TABLE:
        table = table.get(part) if isinstance(table, dict) else None
        if table is None:
            break
    if table is None:
        return raw if required and path.name != "pyproject.toml" else {}
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [tool.compressbench] is not a table")
    return table


def _parse(option: Option, value, where: str) -> Any:
    try:
        parsed = option.parse(value)
        if option.parse is _number:
            _check_range(option, parsed)
    except ValueError as exc:
        expected = _range_text(option) if option.parse is _number else exc
        raise SettingsError(f"{where}: {option.key} = {value!r}: expected {expected}") from None
    if option.choices and parsed not in option.choices:
        raise SettingsError(f"{where}: {option.key} = {value!r}; valid choices: {', '.join(option.choices)}")
    return parsed


def resolve_settings(cli: Mapping[str, Any], table: dict | None = None, table_file: Path | None = None,
                     options: tuple[Option, ...] = OPTIONS) -> Settings:
    """Defaults < environment < ``table`` (from ``table_file``) < ``cli`` (option name -> value, None where not
    given), over the options table ``options`` (the suite passes its whole table, bench.plugin.options.OPTIONS)."""
    by_name, by_key = index_options(options)
    values = {o.name: o.default for o in options}
    sources = {o.name: "default" for o in options}
    for option in options:
        if option.env and os.environ.get(option.env):
            where = f"${option.env}"
            values[option.name], sources[option.name] = _parse(option, os.environ[option.env], where), where
    named: dict[str, dict] = {}
    where = str(table_file) if table_file else "[tool.compressbench]"
    base = table_file.parent if table_file else Path.cwd()
    for key, value in (table or {}).items():
        if key == "model":
            named = _named_models(value, where, base)
            continue
        option = by_key.get(key) or by_key.get(key.replace("_", "-"))
        if option is None or not option.in_table:
            raise SettingsError(f"{where}: unknown key {key!r} in [tool.compressbench]; valid keys: "
                                f"{', '.join(o.key for o in options if o.in_table)}, model.<name>")
        parsed = _parse(option, value, where)
        if option.path and parsed is not None and parsed not in option.words:
            parsed = _resolve(base, parsed)
        values[option.name], sources[option.name] = parsed, where
    for name, value in cli.items():
        if value is None:
            continue
        option = by_name[name]
        values[name] = _parse(option, value, option.flag) if not option.switch else bool(value)
        sources[name] = "command line"
    return Settings(values, sources, named, str(table_file) if table_file else None)


def _resolve(base: Path, path: str) -> str:
    """A path written in a settings file, relative to that file's folder."""
    return str((base / Path(path).expanduser()).resolve())


def _named_models(tables, where: str, base: Path) -> dict[str, dict]:
    if not isinstance(tables, dict):
        raise SettingsError(f"{where}: model must be a table of named models ([tool.compressbench.model.NAME])")
    named = {}
    for name, entry in tables.items():
        at = f"{where}: [tool.compressbench.model.{name}]"
        if not isinstance(entry, dict):
            raise SettingsError(f"{at} is not a table")
        unknown = set(entry) - set(MODEL_KEYS)
        if unknown:
            raise SettingsError(f"{at}: unknown keys {sorted(unknown)}; valid keys: {', '.join(MODEL_KEYS)}")
        if ("path" in entry) == ("hub" in entry):
            raise SettingsError(f"{at}: give exactly one of path = \"./folder\" or hub = \"org/name\"")
        resolved = {}
        for key, value in entry.items():
            if key in ("path", "hub"):
                resolved[key] = _parse(Option(key, f"--{key}", None, _text, ""), value, at)
                if key == "path":
                    resolved[key] = _resolve(base, value)
                continue
            option = BY_KEY[key]
            parsed = _parse(option, value, at)
            if option.path and parsed is not None:
                parsed = _resolve(base, parsed)
            resolved[option.name] = parsed
        named[name] = resolved
    return named


def find_table_file(rootdir: Path, invocation_dir: Path, explicit: str | None) -> Path | None:
    """The file whose ``[tool.compressbench]`` table applies: ``explicit`` (``--compressbench-config``), else
    the ``pyproject.toml`` of the folder pytest runs from, else none."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    for folder in dict.fromkeys((invocation_dir, rootdir)):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and read_table(candidate):
            return candidate
    return None
