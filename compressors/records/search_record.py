"""The accuracy-aware search's record: what ``pytest bench --search`` saves in a run's ``compressbench`` block
under ``"search"`` and what ``python -m reports search`` and the HTML report read, as one versioned type.

Version 1. Each model's trials are the knobs tried on held-apart rows (``drop`` against fp32 on the same
rows: pp of accuracy, or % perplexity rise for language models; ``speed_ratio`` a quick in-search estimate,
fp32 latency / trial latency); ``choices`` is each family's pick (or, when none passes, the closest),
``chains`` the picks stacked on a parent, ``frontier`` the techniques no other beats on both drop and the
objective. :meth:`SearchRecord.from_dict` checks the version and the keys every reader relies on, and names
the first one missing by its path in the record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from compressors import CompressbenchError

SEARCH_RECORD_VERSION = 1
SEARCH_KEY = "search"  # under the saved run's top-level "compressbench" block


class SearchRecordError(CompressbenchError):
    """A search record of another version, or one missing a key its readers need."""


def _build(cls, data: Any, where: str, **converted):
    """``cls`` from the dict ``data``: every field without a default must be there (``where`` names the place
    in the record for the error); keys this version does not know are ignored; ``converted`` overrides."""
    if not isinstance(data, dict):
        raise SearchRecordError(f"search record: {where} is {type(data).__name__}, not an object")
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in data and f.name not in converted]
    if missing:
        raise SearchRecordError(f"search record: {where} has no {', '.join(repr(m) for m in missing)}")
    values = {f.name: data[f.name] for f in fields if f.name in data}
    return cls(**{**values, **converted})


@dataclasses.dataclass(frozen=True)
class Goal:
    """limit_kind: ``max_drop_pp`` or ``max_ppl_rise_pct``; limit: its value; metric: ``accuracy_pct`` or
    ``perplexity``; objective: what the search minimises among passing knobs (latency, size, memory);
    budget_minutes: the search's time budget, or None."""

    limit_kind: str
    limit: float
    metric: str
    objective: str
    budget_minutes: float | None = None

    @property
    def unit(self) -> str:
        """The unit of a drop against this goal's limit: pp of accuracy, or % of perplexity."""
        return "%" if self.limit_kind == "max_ppl_rise_pct" else "pp"

    def passes(self, drop: float | None) -> bool | None:
        return None if drop is None else drop <= self.limit + 1e-9


@dataclasses.dataclass(frozen=True)
class Trial:
    """One knob (or chain) tried on held-apart rows."""

    family: str
    knob: Any
    technique: str
    rows: int
    drop: float | None
    verdict: str  # pass | fail
    parent: str | None = None  # a chain trial: the technique it was stacked on
    drop_low: float | None = None
    drop_high: float | None = None
    early: bool = False  # stopped before all held-apart rows: the interval already decided
    build_s: float | None = None
    quality_s: float | None = None
    cached: bool = False
    speed_ratio: float | None = None  # fp32 latency / this latency, the search's quick estimate
    size_bytes: int | None = None
    memory_bytes: int | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Choice:
    """A family's pick (or a chain's): ``technique`` None when no knob passed; ``closest`` then names the
    nearest miss ({"technique", "drop"})."""

    passed: bool
    technique: str | None = None
    knob: Any = None
    drop: float | None = None
    closest: dict | None = None


@dataclasses.dataclass(frozen=True)
class ModelSearch:
    name: str
    reference: dict  # the fp32 reference on the held-apart rows: technique, quality, latency_s, size_bytes
    trials: tuple[Trial, ...]
    choices: dict[str, Choice]
    frontier: tuple[str, ...]
    held_apart: dict = dataclasses.field(default_factory=dict)  # source, rows, checksum
    chains: dict[str, Choice] = dataclasses.field(default_factory=dict)
    none_passed: tuple[str, ...] = ()

    def trial_of(self, technique: str) -> Trial | None:
        """The trial that decided ``technique``: the one on the most held-apart rows (the last of equals)."""
        trials = [t for t in self.trials if t.technique == technique]
        return max(reversed(trials), key=lambda t: t.rows, default=None)

    @property
    def winners(self) -> list[str]:
        """The techniques the search handed to the run: each passing family choice and chain, then any
        frontier member not among them, in that order, each once."""
        picked = [c.technique for c in (*self.choices.values(), *self.chains.values()) if c.passed and c.technique]
        return list(dict.fromkeys([*picked, *self.frontier]))


@dataclasses.dataclass(frozen=True)
class SearchRecord:
    version: int
    goal: Goal
    rule: str
    seconds: float
    trials: int
    models: dict[str, ModelSearch]
    cached_trials: int = 0
    plan: dict | None = None  # trials and estimated_s before it started
    stopped: str | None = None  # why it stopped early (its budget), or None
    replay_file: str | None = None  # the --techniques @FILE that replays its winners

    @classmethod
    def from_dict(cls, data: Any) -> SearchRecord:
        """Read a saved record; :class:`SearchRecordError` on another version or a missing key."""
        if not isinstance(data, dict):
            raise SearchRecordError(f"search record is {type(data).__name__}, not an object")
        version = data.get("version")
        if version != SEARCH_RECORD_VERSION:
            raise SearchRecordError(f"search record version {version!r}: this compressbench reads version "
                                    f"{SEARCH_RECORD_VERSION} only (use the compressbench that saved the run)")
        models = data.get("models")
        if not isinstance(models, dict):
            raise SearchRecordError("search record has no 'models' object")
        return _build(cls, data, "the record", goal=_build(Goal, data.get("goal"), "goal"),
                      models={name: _model(name, m) for name, m in models.items()})

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        for model in record["models"].values():
            model.pop("name")
            model["trials"] = list(model["trials"])
            model["frontier"] = list(model["frontier"])
            model["none_passed"] = list(model["none_passed"])
        return record


def _model(name: str, data: Any) -> ModelSearch:
    where = f"models.{name}"
    if not isinstance(data, dict):
        raise SearchRecordError(f"search record: {where} is {type(data).__name__}, not an object")
    absent = [k for k in ("reference", "trials", "choices", "frontier") if k not in data]
    if absent:
        raise SearchRecordError(f"search record: {where} has no {', '.join(repr(k) for k in absent)}")
    if not isinstance(data["trials"], list):
        raise SearchRecordError(f"search record: {where}.trials is not a list")
    return _build(
        ModelSearch, data, where, name=name,
        trials=tuple(_build(Trial, t, f"{where}.trials[{i}]") for i, t in enumerate(data["trials"])),
        choices={f: _build(Choice, c, f"{where}.choices.{f}") for f, c in (data["choices"] or {}).items()},
        chains={f: _build(Choice, c, f"{where}.chains.{f}") for f, c in (data.get("chains") or {}).items()},
        frontier=tuple(data["frontier"] or ()), none_passed=tuple(data.get("none_passed") or ()),
    )


def search_record(compressbench: dict | None) -> SearchRecord | None:
    """The search record of a run's ``compressbench`` block, or None when the run was not a search."""
    data = (compressbench or {}).get(SEARCH_KEY)
    return None if data is None else SearchRecord.from_dict(data)
