"""Techniques and chains of techniques.

A :class:`Technique` is a registered name plus a frozen config and a builder
that turns one artifact into another (a PyTorch model into a quantized one, a
PyTorch model into an ONNX graph, ...). It declares what it consumes and
produces, which tasks and devices it supports and which packages it needs, so
invalid combinations are rejected when the matrix is collected, not mid-run.

A chain (``layerdrop-2+dynamic-int8``) is a sequence of techniques built stage
by stage, each stage cached under its parent's key. A technique may imply
stages before it (``onnx-int8`` quantizes the graph that ``onnx-fp32`` exports).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from compressors import CompressbenchError
from compressors.builders.context import BuildContext
from compressors.core.cache import Artifact, library_versions
from compressors.core.config import Config
from compressors.core.registry import Registry
from compressors.execution.loaders import ARTIFACT_LOADERS

# What flows between stages.
TORCH_MODEL = "torch"  # an hf-torch artifact: a float PyTorch model that can be compressed further
TORCH_FINAL = "torch-final"  # a PyTorch model no further stage can take (quantized, low-rank factorized)
ONNX_GRAPH = "onnx"
OPENVINO_IR = "openvino"  # an OpenVINO IR (openvino_model.xml + .bin)
PEFT_ADAPTER = "peft"  # a float base + LoRA adapters, unmerged
FLOWS = {
    TORCH_MODEL: "a float PyTorch model",
    TORCH_FINAL: "a final PyTorch model (quantized or restructured)",
    ONNX_GRAPH: "an ONNX graph",
    OPENVINO_IR: "an OpenVINO IR",
    PEFT_ADAPTER: "a base model with unmerged LoRA adapters",
}

DEVICES = ("cpu", "cuda")

Builder = Callable[[Artifact, Path, Config, BuildContext], dict | None]


class ChainError(CompressbenchError, ValueError):
    """A technique chain names an unknown stage or stages that cannot follow each other."""


@dataclasses.dataclass(frozen=True)
class Technique:
    """One registered compression technique.

    Args:
        name: registry name (lowercase; the technique part of test ids).
        summary: one line: what it does and which paper or library it follows.
        config: the frozen config passed to ``build`` and saved with every result.
        consumes / produces: one of :data:`FLOWS` each.
        tasks: model tasks it applies to.
        devices: devices its output runs on (``"cpu"``, ``"cuda"``).
        requires: importable module names it needs; absent ones skip with a reason.
        build: ``build(parent, out_dir, config, ctx) -> meta``; None for the identity (``fp32``).
        artifact_kind: loader kind of what ``build`` writes (its loader is in ``compressors.execution.loaders``).
        weights: files of the artifact counted as its size.
        implies: techniques that must run right before this one (added when absent).
        version_packages: distributions whose versions go into the cache key (with those whose classes its
            kind's pickle names, ``ArtifactLoader.pickle_packages``).
        trains: building it trains (minutes on a cold cache: its cases get the ``slow`` marker).
        compiles: loading it compiles (``torch.compile``: minutes per process, also ``slow``).
        starts_from_pretrained: it trains from the model's pretrained encoder, not from its
            parent's weights (LoRA), so it can only be a chain's first stage.
        default_for: tasks whose default benchmark matrix includes it (None: every task in
            ``tasks``); every registered technique is in at least one (a unit test checks).
        layers_after: for techniques that depend on the layer count (they remove encoder layers, or keep
            some float): ``layers_after(n)`` is how many remain of ``n``, and raises :class:`ChainError`
            (naming the valid range) when it cannot apply; checked against each model's config before
            anything is built.
        kernels: the kernels its speed rests on (names of :data:`compressors.machine.kernels.KERNELS`); where
            the kernel probe finds one a reference fallback on this machine, its configurations
            are skipped at collection with the figures (``--run-slow-kernels`` runs them anyway).
        uses_data: building it reads the model's train rows (it trains, calibrates or measures
            sensitivity): the train rows' checksum goes into its cache key, its configurations skip
            with a reason when the run has no train rows, and only such a technique may read them
            (:class:`compressors.quality.taskdata.StageData`).
        model_types: the ``model_type`` values (config.json) its recipe knows (the ONNX transformer
            optimizer's fusion patterns, an encoder stack to drop layers from); None: any. A model of
            another type skips its configurations with a reason naming the architecture.
        budget_from: for a name no budgets table can list one by one (``dynamic-int8-fb3``): the registered
            technique whose quality limits it is held to when ``bench/budgets.toml`` has no table of its own
            (its memory is held to fp32's: it keeps part of the model float); see ``bench/budgets.py``.
        tolerance: the largest relative logit error vs fp32 it may show on the unit tests'
            tiny random models (tests/techniques/test_contract.py), which amplify weight error
            far more than trained ones. None where closeness to fp32 on random weights says
            nothing: it retrains, removes layers, or cuts random weights (pruning, truncated SVD
            of their flat spectra); the contract then checks shapes and finite logits, and the
            technique's own unit tests check what it does.
    """

    name: str
    summary: str
    config: Config
    consumes: str
    produces: str
    tasks: frozenset[str]
    devices: frozenset[str]
    build: Builder | None = None
    artifact_kind: str | None = None
    weights: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    version_packages: tuple[str, ...] = ("torch", "transformers")
    trains: bool = False
    compiles: bool = False
    starts_from_pretrained: bool = False
    default_for: frozenset[str] | None = None
    kernels: tuple[str, ...] = ()
    tolerance: float | None = 0.05
    layers_after: Callable[[int], int] | None = None
    uses_data: bool = False
    model_types: frozenset[str] | None = None
    budget_from: str | None = None

    @property
    def default_tasks(self) -> frozenset[str]:
        return self.tasks if self.default_for is None else frozenset(self.default_for)

    def __post_init__(self) -> None:
        for flow in (self.consumes, self.produces):
            if flow not in FLOWS:
                raise ValueError(f"technique {self.name!r}: flow {flow!r} not in {sorted(FLOWS)}")
        bad = set(self.devices) - set(DEVICES)
        if bad:
            raise ValueError(f"technique {self.name!r}: devices {sorted(bad)} not in {DEVICES}")
        if self.build is not None and (not self.artifact_kind or not self.weights):
            raise ValueError(f"technique {self.name!r} builds an artifact: give artifact_kind and weights")
        if self.default_for is not None and not set(self.default_for) <= set(self.tasks):
            raise ValueError(f"technique {self.name!r}: default_for {sorted(self.default_for)} is not within its "
                             f"tasks {sorted(self.tasks)}")

    def missing_requirements(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    def cache_recipe(self, parent: Artifact, config: Config | None = None, data=None) -> dict:
        """What the artifact's cache key hashes; ``config`` is the one resolved for the machine, ``data``
        the model's :class:`~compressors.quality.taskdata.TaskData` (its train rows' checksum when the technique
        uses data)."""
        loader = ARTIFACT_LOADERS.get(self.artifact_kind) if self.artifact_kind else None
        # a kind whose loader unpickles: the libraries whose classes the pickle names key it too
        packages = dict.fromkeys(self.version_packages + (loader.pickle_packages if loader else ()))
        recipe = {
            "parent": parent.key,
            "technique": self.name,
            "config": (config or self.config).to_dict(),
            "versions": library_versions(*packages),
        }
        if loader is not None and loader.pickles:  # the package's own classes it unpickles: a moved class, a new key
            recipe["pickles"] = list(loader.pickles)
        if self.uses_data:
            if data is None:
                from compressors.quality.data import DataError

                raise DataError(f"{self.name} builds from data, and its build context has none")
            recipe["data"] = {"name": data.name, "train_checksum": data.train_checksum()}
        return recipe


TECHNIQUES: Registry[Technique] = Registry("technique")


def check_registrable(technique: Technique) -> None:
    """What registration demands beyond a valid name: implied stages registered first, and a
    registered loader for the artifact kind it builds (so every artifact it writes can be read)."""
    from compressors.machine.kernels import KERNELS

    unknown = [k for k in technique.kernels if k not in KERNELS]
    if unknown:
        raise ChainError(f"technique {technique.name!r} declares unknown kernels {unknown}; "
                         f"registered kernels: {', '.join(KERNELS)}")
    for implied in technique.implies:
        if implied not in TECHNIQUES:
            raise ChainError(f"technique {technique.name!r} implies {implied!r}, which is not registered (yet)")
    if technique.artifact_kind is not None and technique.artifact_kind not in ARTIFACT_LOADERS:
        raise ChainError(f"technique {technique.name!r} builds {technique.artifact_kind!r} artifacts, but no loader "
                         f"is registered for that kind; add its loader to compressors.execution.loaders "
                         f"(kinds: {ARTIFACT_LOADERS.describe_names()})")


def register_technique(technique: Technique) -> Technique:
    check_registrable(technique)
    TECHNIQUES.register(technique.name, technique)
    _MATRIX_ORDER.append(technique.name)
    return technique


def register_variants(common: dict, variants: list[dict]) -> list[Technique]:
    """Register one family's variants from a table: ``common`` fields shared by all, each row of
    ``variants`` the fields that differ (at least ``name``, ``summary``, ``config``)."""
    return [register_technique(Technique(**{**common, **row})) for row in variants]


def register_technique_family(pattern: str, example: str, factory, defaults: tuple[str, ...] = (),
                              listed_in_place: bool = False) -> None:
    """Techniques parametrised in their name (``layerdrop-K``): ``factory(match) -> Technique``.

    ``factory`` raises :class:`ChainError` naming the valid range for a name that matches ``pattern``
    but whose value is out of range (``l1-99``), so the user reads that rather than "unknown technique".
    ``defaults`` are the names of the family that the default matrix benchmarks: after every single
    technique, or with ``listed_in_place`` where the family is registered (a family that replaced a fixed
    menu of variants, ``l1-30``/``l1-40``/``l1-50``, keeps their place in the matrix and so the order of its
    cases)."""
    check_registrable(factory(re.fullmatch(pattern, example)))
    for name in defaults:
        if not re.fullmatch(pattern, name):
            raise ChainError(f"technique family {pattern!r}: its default {name!r} does not match it")
        check_registrable(factory(re.fullmatch(pattern, name)))
    TECHNIQUES.register_family(pattern, example, factory)
    FAMILY_DEFAULTS.extend(defaults)
    if listed_in_place:
        _MATRIX_ORDER.extend(defaults)


def name_knob(name: str, text: str, what: str, low: int, high: int, valid: str) -> int:
    """The integer ``text`` (a family's parameter in technique ``name``, ``what`` it is) when it lies in
    ``low..high`` and is written plainly; else :class:`ChainError` naming it and ``valid``."""
    value = int(text)
    if text != str(value) or not low <= value <= high:
        raise ChainError(f"technique {name!r}: {what} {text} is not an integer from {low} to {high}; valid: {valid}")
    return value


# Names of parametrised techniques (families) in the default matrix, and the default chains:
# chains of registered techniques benchmarked by default, each cached stage by stage.
FAMILY_DEFAULTS: list[str] = []
DEFAULT_CHAINS: list[str] = []
# Registered names and in-place family defaults, in registration order: the default matrix's order.
_MATRIX_ORDER: list[str] = []


def register_default_chain(name: str) -> None:
    parse_chain(name)  # fails loudly on an invalid chain
    DEFAULT_CHAINS.append(name)


def default_techniques(task: str) -> list[str]:
    """The techniques and chains benchmarked by default on ``task``'s models: ``fp32`` first, then
    every registered technique and family default whose ``default_tasks`` has ``task`` (in registration
    order, the defaults of families not listed in place last), then the default chains that apply to it."""
    ordered = [*_MATRIX_ORDER, *(n for n in FAMILY_DEFAULTS if n not in _MATRIX_ORDER)]
    singles = [TECHNIQUES.get(n) for n in ordered]
    names = [t.name for t in singles if task in t.default_tasks]
    # a chain is in a task's default matrix when every stage it names is
    names += [c for c in DEFAULT_CHAINS if all(task in s.default_tasks for s in parse_chain(c).stages)]
    return sorted(names, key=lambda n: n != "fp32")


def get_technique(name: str) -> Technique:
    return TECHNIQUES.get(name)


@dataclasses.dataclass(frozen=True)
class Chain:
    """A validated sequence of techniques, as named by the user (``a+b``).

    ``stages`` are the named techniques; ``build_stages`` adds implied ones.
    """

    name: str
    stages: tuple[Technique, ...]
    build_stages: tuple[Technique, ...]

    @property
    def tasks(self) -> frozenset[str]:
        return frozenset.intersection(*(s.tasks for s in self.build_stages))

    @property
    def devices(self) -> frozenset[str]:
        # The last stage decides where the result runs; every stage must allow it.
        return frozenset.intersection(*(s.devices for s in self.build_stages))

    @property
    def uses_data(self) -> bool:
        """A stage trains, calibrates or measures sensitivity on the model's train rows."""
        return any(s.uses_data for s in self.build_stages)

    @property
    def slow(self) -> bool:
        """Minutes on a cold cache: a stage trains or compiles."""
        return any(s.trains or s.compiles for s in self.build_stages)

    @property
    def produces(self) -> str:
        return self.build_stages[-1].produces

    @property
    def kernels(self) -> tuple[str, ...]:
        """Every kernel a stage of the chain rests on (``layerdrop-2+onnx-int8``: ONNX Runtime's int8)."""
        return tuple(dict.fromkeys(k for s in self.build_stages for k in s.kernels))

    def missing_requirements(self) -> list[str]:
        return sorted({m for s in self.build_stages for m in s.missing_requirements()})

    def architecture_reason(self, model_type: str | None, architecture: str | None = None) -> str | None:
        """Why the chain's recipe does not fit a model of ``model_type`` (a stage knows other types only),
        or None (it fits, or the type is unknown and the build itself will say)."""
        if not model_type:
            return None
        for stage in self.build_stages:
            if stage.model_types is not None and model_type not in stage.model_types:
                return (f"{stage.name} knows model types {', '.join(sorted(stage.model_types))}; this model is "
                        f"{model_type!r}" + (f" ({architecture})" if architecture else ""))
        return None

    def check_layers(self, layers: int, model: str) -> None:
        """Raise :class:`ChainError` when a stage cannot apply to a ``layers``-layer encoder (``model``)."""
        for stage in self.build_stages:
            if stage.layers_after is not None:
                try:
                    layers = stage.layers_after(layers)
                except ChainError as exc:
                    raise ChainError(f"{self.name} on {model}: {exc}") from None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "stages": [{"technique": s.name, "config": s.config.to_dict()} for s in self.build_stages],
        }


def parse_chain(name: str) -> Chain:
    """Parse and validate ``name`` (one technique, or several joined with ``+``).

    Raises :class:`ChainError` naming the bad stage and what would be valid.
    """
    if not isinstance(name, str) or not name.strip():
        raise ChainError(f"empty technique name {name!r}; valid techniques: {TECHNIQUES.describe_names()}")
    parts = name.split("+")
    stages = []
    for part in parts:
        if part not in TECHNIQUES:
            raise ChainError(f"unknown technique {part!r} in {name!r}; valid techniques: {TECHNIQUES.describe_names()}")
        stages.append(TECHNIQUES.get(part))
    expanded: list[Technique] = []

    def add(stage: Technique) -> None:  # implied stages first, recursively, unless already just before
        for implied in stage.implies:
            if not expanded or expanded[-1].name != implied:
                add(TECHNIQUES.get(implied))
        expanded.append(stage)

    for stage in stages:
        add(stage)
    flow = TORCH_MODEL
    previous = None
    for position, stage in enumerate(expanded):
        if stage.starts_from_pretrained and position:
            raise ChainError(
                f"invalid chain {name!r}: {stage.name!r} trains from the pretrained encoder, so it must come first "
                f"(it would ignore what {previous.name!r} did)"
            )
        if stage.consumes != flow:
            after = f"after {previous.name!r}, which produces {FLOWS[flow]}" if previous else "as the first stage"
            raise ChainError(
                f"invalid chain {name!r}: {stage.name!r} needs {FLOWS[stage.consumes]} but comes {after}"
            )
        flow, previous = stage.produces, stage
    if not frozenset.intersection(*(s.devices for s in expanded)):
        shared = [sorted(s.devices) for s in expanded]
        raise ChainError(f"invalid chain {name!r}: its stages share no device ({shared})")
    return Chain(name=name, stages=tuple(stages), build_stages=tuple(expanded))


def build_chain(base: Artifact, chain: Chain, ctx: BuildContext, label: str) -> Artifact:
    """Build (or load from cache) every stage of ``chain`` on top of ``base``.

    Args:
        base: the model's fp32 base artifact.
        label: prefix for cache folder names (usually the model name).
    """
    artifact = base
    for stage in chain.build_stages:
        if stage.build is None:
            continue
        parent = artifact
        config = stage.config.for_machine(ctx.cpu)

        # the stage sees train rows only, and only when it declares it uses them (compressors/quality/taskdata.py)
        stage_ctx = ctx if ctx.data is None else dataclasses.replace(
            ctx, data=ctx.data.for_stage(stage.name, stage.uses_data))

        def build(out: Path, stage=stage, parent=parent, config=config, stage_ctx=stage_ctx) -> dict | None:
            return stage.build(parent, out, config, stage_ctx)

        artifact = ctx.cache.get_or_build(
            artifact_kind=stage.artifact_kind,
            name=f"{label}-{stage.name}",
            recipe=stage.cache_recipe(parent, config, ctx.data),
            build=build,
            weights=list(stage.weights),
        )
    return artifact
