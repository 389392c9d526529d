"""The result row: what a benchmark test records and what every report reads, as one versioned type.

A :class:`ResultRow` has one section per concern (identity, quality, size and memory, latency,
placement, provenance). It is saved flat in pytest-benchmark's ``extra_info`` (so
``pytest-benchmark compare`` and ``list`` keep reading the files) by :meth:`ResultRow.to_extra_info`
and read back by :meth:`ResultRow.from_extra_info`, the one reader ``reports`` uses. Flat names
are declared once, in the sections' fields; ``row["accuracy_pct"]`` reads one by name and an
unknown name raises, so a typo cannot silently read ``None``. Which of its figures the tables, the
reports, compare and the budgets show and judge is declared in :mod:`compressors.records.metric_table`;
the results table itself is :mod:`compressors.records.tables`.

Schema versions: 1 = runs saved before this type existed (no ``schema_version`` key; the same
flat keys); 2 = the typed row; 3 = adds per-round timings, the paired speed ratio vs fp32, the
contention record, per-example correctness and the accuracy drop's interval. Keys a version does
not know are kept in ``extra`` and written back; fields an older row lacks read as ``None``, so a
new metric's field needs no new version unless it changes what an existing key means.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from compressors import CompressbenchError

SCHEMA_VERSION = 3
SCHEMA_KEY = "schema_version"
# Batch sizes a row's id carries; language-model rows add their scenario (``-prefill512``).
IDENTITY_KEYS = ("model", "technique", "tier", "batch_size")


class ResultSchemaError(CompressbenchError):
    """A saved row that is not a compressbench result (missing identity) or from a newer schema."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """Which configuration: model x technique chain x tier x batch size (x scenario for LMs)."""

    model: str
    technique: str
    tier: str
    batch_size: int
    device: str | None = None  # the tier's device kind (cpu, cuda)
    run_device: str | None = None  # where it ran: cpu or cuda:N
    task: str | None = None
    scenario: str | None = None  # language models: prefill512, gen32, prefill512-fullppl

    @property
    def config_id(self) -> str:
        """``model-technique-tier-bsN[-scenario]``: the test id (what ``-k`` matches)."""
        return config_id(self.model, self.technique, self.tier, self.batch_size, self.scenario)


@dataclasses.dataclass(frozen=True)
class Quality:
    """Accuracy (classifiers) or perplexity (language models), with the fp32 baseline's."""

    accuracy_pct: float | None = None
    baseline_accuracy_pct: float | None = None
    accuracy_drop_pp: float | None = None
    perplexity: float | None = None
    baseline_perplexity: float | None = None
    perplexity_increase_pct: float | None = None
    mean_nll: float | None = None
    eval: dict | None = None  # what was evaluated: split, examples or windows, checksum
    # Classifiers: which dev sentences it got right (compressors.records.stats.pack_bools), and the drop's
    # paired 95% interval and exact McNemar p-value against fp32 on the same sentences.
    per_example_correct: dict | None = None  # {"encoding": "packbits-base64", "n": 872, "data": ...}
    accuracy_drop_ci_pp: list | None = None
    accuracy_drop_mcnemar_p: float | None = None

    @property
    def drop(self) -> float | None:
        """Accuracy drop in pp, or perplexity rise in % for language models."""
        return self.accuracy_drop_pp if self.accuracy_drop_pp is not None else self.perplexity_increase_pct


@dataclasses.dataclass(frozen=True)
class SizeMemory:
    size_bytes: int | None = None
    size_ratio_vs_fp32: float | None = None
    peak_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    runtime_rss_bytes: int | None = None
    memory_flags: list | None = None
    vram: dict | None = None  # GPU tiers: every ``vram_*`` key of compressors.machine.gpu_memory, flattened when saved


@dataclasses.dataclass(frozen=True)
class Latency:
    """Timing: pytest-benchmark's median (from its stats, not saved twice) and the suite's extras."""

    median_s: float | None = None
    latency_s: dict | None = None  # rounds, p50, p90, p99 of the per-round timings
    per_token_s: float | None = None  # generation rows: median / new tokens
    round_s: list | None = None  # every round's time (seconds), for rank tests across runs
    speed_vs_fp32: dict | None = None  # paired with fp32 in the same window: ratio, ci95, blocks
    contention: dict | None = None  # compressors.machine.timing.ContentionMonitor's record of the timing window
    # 2 x multiply-adds of the timed call on its real tokens (compressors.evaluation.tasks)
    useful_ops: float | None = None
    kernel: str | None = None  # the kernel its speed rests on, whose probed peak "share of peak" divides by

    @property
    def contended(self) -> bool:
        return bool((self.contention or {}).get("contended"))

    @property
    def p90_s(self) -> float | None:
        return (self.latency_s or {}).get("p90")

    @property
    def p99_s(self) -> float | None:
        return (self.latency_s or {}).get("p99")

    @property
    def rounds(self) -> int | None:
        return (self.latency_s or {}).get("rounds")


@dataclasses.dataclass(frozen=True)
class Placement:
    placement: dict | None = None  # the measurement process's view
    timed_placement: dict | None = None  # the timed process's view
    fallback: list | None = None  # GPU configurations: what ran on the CPU


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What produced the figures: recipe, artifacts, inputs, versions, the budget applied."""

    recipe: dict | None = None
    model_spec: dict | None = None
    artifact_key: str | None = None
    artifact_meta: dict | None = None
    base_artifact: dict | None = None
    versions: dict | None = None
    timing_input: dict | None = None
    budget: dict | None = None
    measurement: dict | None = None  # the isolated measurement: when, and whether reused from an earlier run
    data: dict | None = None  # the rows evaluated (and trained or calibrated on): sources, counts, checksums, labels

    @property
    def training_s(self) -> float | None:
        """Wall seconds of the training its artifact needed (fine-tune, re-finetune, LoRA, distillation)."""
        return ((self.artifact_meta or {}).get("training") or {}).get("wall_seconds")

    @property
    def sensitivity(self) -> list | None:
        """Layer-drop techniques: the layer sensitivity curve their choice came from."""
        return (self.artifact_meta or {}).get("sensitivity")

    @property
    def sensitivity_key(self) -> str | None:
        return (self.artifact_meta or {}).get("sensitivity_artifact")


SECTIONS = {"quality": Quality, "size": SizeMemory, "latency": Latency, "placement": Placement,
            "provenance": Provenance}
# Flat extra_info name -> (section, field). ``median_s`` lives in pytest-benchmark's stats; ``vram``
# is spread over its own ``vram_*`` keys.
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{f.name: ("identity", f.name) for f in dataclasses.fields(Identity)},
    **{f.name: (section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
       if f.name not in ("vram",)},
}
NOT_SAVED = {"median_s"}


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One benchmark's result. ``outcome`` (passed, failed, ...) is the terminal summary's, never saved."""

    identity: Identity
    quality: Quality = Quality()
    size: SizeMemory = SizeMemory()
    latency: Latency = Latency()
    placement: Placement = Placement()
    provenance: Provenance = Provenance()
    outcome: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    version: ClassVar[int] = SCHEMA_VERSION

    @property
    def config_id(self) -> str:
        return self.identity.config_id

    def __getitem__(self, name: str) -> Any:
        """A field by its flat (saved) name; derived ones too (``p90_s``, ``drop``, ``id``)."""
        if name in FLAT_FIELDS:
            section, field = FLAT_FIELDS[name]
            return getattr(getattr(self, section), field)
        if name.startswith("vram_"):
            return (self.size.vram or {}).get(name)
        derived = {"id": lambda: self.config_id, "p90_s": lambda: self.latency.p90_s,
                   "p99_s": lambda: self.latency.p99_s, "rounds": lambda: self.latency.rounds,
                   "drop": lambda: self.quality.drop, "training_s": lambda: self.provenance.training_s,
                   "sensitivity": lambda: self.provenance.sensitivity,
                   "sensitivity_key": lambda: self.provenance.sensitivity_key}
        if name in derived:
            return derived[name]()
        raise KeyError(f"{name!r} is not a result field; fields: {', '.join(sorted(FLAT_FIELDS))}")

    def replace(self, **sections) -> ResultRow:
        """A copy with fields changed, by section: ``row.replace(latency={"per_token_s": 0.1})``."""
        changes = {}
        for section, values in sections.items():
            if section in ("outcome", "extra"):
                changes[section] = values
            else:
                changes[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **changes)

    def to_extra_info(self) -> dict:
        """The flat dict saved in ``benchmark.extra_info`` (JSON-serialisable, ``None`` fields left out)."""
        info: dict[str, Any] = {SCHEMA_KEY: SCHEMA_VERSION}
        for name, (section, field) in FLAT_FIELDS.items():
            value = getattr(getattr(self, section), field)
            if value is not None and name not in NOT_SAVED:
                info[name] = value
        info.update(self.size.vram or {})
        for key, value in self.extra.items():
            info.setdefault(key, value)
        return info

    @classmethod
    def from_extra_info(cls, info: dict, median_s: float | None = None, outcome: str | None = None) -> ResultRow:
        """Read a saved ``extra_info`` (any schema version up to this one).

        Raises :class:`ResultSchemaError` when it is not a compressbench row (no model, technique,
        tier and batch size) or comes from a newer schema than this code reads.
        """
        version = int(info.get(SCHEMA_KEY, 1))
        if version > SCHEMA_VERSION:
            raise ResultSchemaError(f"result schema {version} is newer than this compressbench reads "
                                    f"({SCHEMA_VERSION}): update compressbench")
        missing = [k for k in IDENTITY_KEYS if info.get(k) is None]
        if missing:
            raise ResultSchemaError(f"not a compressbench result: no {', '.join(missing)}")
        values: dict[str, dict] = {"identity": {}, **{s: {} for s in SECTIONS}}
        extra = {}
        for key, value in info.items():
            if key == SCHEMA_KEY:
                continue
            if key in FLAT_FIELDS:
                section, field = FLAT_FIELDS[key]
                values[section][field] = value
            elif key.startswith("vram_"):
                values["size"].setdefault("vram", {})[key] = value
            else:
                extra[key] = value
        values["identity"]["batch_size"] = int(values["identity"]["batch_size"])
        if median_s is not None:
            values["latency"]["median_s"] = median_s
        return cls(identity=Identity(**values["identity"]),
                   **{section: SECTIONS[section](**values[section]) for section in SECTIONS},
                   outcome=outcome, extra=extra, schema_version=version)

    @staticmethod
    def is_result(info: dict) -> bool:
        """Whether a saved ``extra_info`` is a compressbench row."""
        return isinstance(info, dict) and all(info.get(k) is not None for k in IDENTITY_KEYS)


def config_id(model: str, technique: str, tier: str, batch_size: int, scenario: str | None = None) -> str:
    suffix = f"-{scenario}" if scenario else ""
    return f"{model}-{technique}-{tier}-bs{batch_size}{suffix}"


def latency_summary(data) -> dict:
    """What the suite saves in ``extra_info["latency_s"]``: percentiles of the per-round timings (seconds)."""
    data = np.asarray(list(data), dtype=float)
    if data.size == 0:
        return {"rounds": 0, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])  # numpy's default: linear interpolation
    return {"rounds": int(data.size), "p50": float(p50), "p90": float(p90), "p99": float(p99)}
