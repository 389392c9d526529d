"""What the search may turn: each technique family with its knob, its values ordered from the least to the
most compressed, and the technique name of each value (``layerdrop-2``, ``dynamic-int8-fb1``).

A family is searched on a model only when its names are registered techniques (a family whose
technique module is not installed is left out, with the reason), its stages fit the model (task,
architecture, layer count) and its requirements are importable. ``structural`` families produce a float
model that a quantizer can take next: the search combines their choice with each quantizing family
(the chains). A family with ``grid`` has a second, discrete knob: the search bisects the monotone knob
once per grid value (``openvino-int4-wo-rR-gG``: the int4 share for each group size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION


@dataclasses.dataclass(frozen=True)
class Family:
    """One searchable technique family.

    Args:
        pattern: how the user names it in ``--techniques`` under ``--search`` (``layerdrop-K``): the knob as
            a capital letter, so a family never reads as one of its techniques (``dynamic-int8``).
        knob: what the knob is, in words.
        task: the model task it applies to.
        values: ``values(layers)`` for a model of ``layers`` transformer layers: knob values from the least
            to the most compressed (the drop grows, weakly, along the list).
        name: the technique name of one value (and grid value).
        structural: produces a float model a quantizer can follow (chains).
        quantizer: a quantizing family a structural choice is chained with.
        grid: the values of a second, discrete knob (None: one knob).
    """

    pattern: str
    knob: str
    task: str
    values: Callable[[int], list]
    name: Callable[..., str]
    structural: bool = False
    quantizer: bool = False
    grid: tuple | None = None

    @property
    def key(self) -> str:
        """The family's name in records and messages (its pattern)."""
        return self.pattern

    def names(self, layers: int) -> list[str]:
        grid = self.grid or (None,)
        return [self.name(v, g) if self.grid else self.name(v) for g in grid for v in self.values(layers)]


def _fallback(recipe: str, task: str) -> Family:
    # keep N layers float: N = layers - 1 (one layer quantized) down to 0 (the whole recipe)
    return Family(f"{recipe}-fbN", f"the N most sensitive layers kept float ({recipe} quantizes the rest)", task,
                  values=lambda layers: list(range(layers - 1, -1, -1)), name=lambda n: f"{recipe}-fb{n}",
                  quantizer=True)


# listed cheap first: a search runs them in this order (quantizers first, each structural family then its chains)
FAMILIES: tuple[Family, ...] = (
    Family("l1-P", "P% of the encoder linears' weights pruned (L1, global)", TASK_CLASSIFICATION,
           values=lambda layers: list(range(5, 100, 5)), name=lambda p: f"l1-{p}", structural=True),
    # from 75% down: at 80% and above no matrix of a transformer (square, or 4:1 feed-forward) is smaller
    # factorized, so the build factorizes nothing (docs/decisions/lowrank-rank-rule.md)
    Family("lowrank-R", "R% of each encoder linear's rank kept (truncated SVD)", TASK_CLASSIFICATION,
           values=lambda layers: list(range(75, 0, -5)), name=lambda r: f"lowrank-{r}"),
    Family("layerdrop-K", "K least sensitive encoder layers removed (then re-finetuned)", TASK_CLASSIFICATION,
           values=lambda layers: list(range(1, layers)), name=lambda k: f"layerdrop-{k}", structural=True),
    Family("distill-lN", "an N-layer student distilled from the model", TASK_CLASSIFICATION,
           values=lambda layers: list(range(layers - 1, 0, -1)), name=lambda n: f"distill-l{n}", structural=True),
    _fallback("dynamic-int8", TASK_CLASSIFICATION),
    _fallback("onnx-int8-static", TASK_CLASSIFICATION),
    _fallback("openvino-int8", TASK_CLASSIFICATION),
    _fallback("dynamic-int8", TASK_CAUSAL_LM),
    _fallback("torchao-int8-dyn", TASK_CAUSAL_LM),
    Family("openvino-int4-wo-rR-gG", "R% of the linears in int4 (the rest int8), int4 groups of G",
           TASK_CAUSAL_LM, values=lambda layers: list(range(0, 101, 10)),
           name=lambda r, g: f"openvino-int4-wo-r{r}-g{g}", quantizer=False, grid=(64, 32, 128)),
)


class SearchSpaceError(ValueError):
    """A name under ``--search`` is neither a searchable family nor a technique."""


def families_for(task: str) -> list[Family]:
    return [f for f in FAMILIES if f.task == task]


def family_named(name: str) -> list[Family]:
    """The families (one per task) a ``--techniques`` entry names under ``--search`` (``layerdrop-K``,
    ``dynamic-int8-fbN``); an empty list when it names none."""
    return [f for f in FAMILIES if name == f.pattern]


def describe_families() -> str:
    return ", ".join(dict.fromkeys(f.pattern for f in FAMILIES))


def availability(family: Family, layers: int | None, model_type: str | None, has_train: bool) -> str | None:
    """Why ``family`` cannot be searched on a model (None: it can): a name not registered, a stage that does
    not fit the architecture or the layer count, a missing requirement, no train rows."""
    from compressors.builders.techniques import ChainError, parse_chain

    if layers is None or layers < 2:
        return f"{family.pattern} needs the model's layer count (config.json num_hidden_layers), and it has {layers}"
    example = family.names(layers)[0]
    try:
        chain = parse_chain(example)
    except ChainError as exc:
        return f"{family.pattern} is not available here ({exc})"
    missing = chain.missing_requirements()
    if missing:
        return f"{family.pattern} needs {missing}: pip install -e '.[bench]'"
    reason = chain.architecture_reason(model_type)
    if reason:
        return reason
    if chain.uses_data and not has_train:
        return f"{family.pattern} trains, calibrates or measures sensitivity on train rows, and the model has none"
    return None
