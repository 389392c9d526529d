"""Frozen, validated, JSON-serialisable configs shared by techniques and recipes."""

from __future__ import annotations

import dataclasses
from typing import Any

from compressors import CompressbenchError


class ConfigError(CompressbenchError, ValueError):
    """A config field has a value outside its valid range or choices."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every technique config and training recipe.

    Subclasses are frozen dataclasses; they validate their fields in
    ``validate()`` (called from ``__post_init__``) and serialise with their type
    name, so every saved benchmark result carries its exact recipe.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden where there is something to check
        pass

    def for_machine(self, cpu) -> Config:
        """The config as built on ``cpu`` (a :class:`~compressors.machine.hardware.CpuInfo`).

        Fields a config leaves to the machine (``None`` = choose for this CPU) are resolved
        here, before the cache key is computed, so the choice is part of the key and an
        artifact built for one CPU kind is never reused on another that needs a different one.
        Default: nothing to resolve.
        """
        return self

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for field in dataclasses.fields(self):  # see keyed_when_set
            if field.metadata.get(KEYED_WHEN_SET) and getattr(self, field.name) == field.default:
                del values[field.name]
        return {"type": type(self).__name__, **values}


KEYED_WHEN_SET = "keyed_when_set"


def keyed_when_set(default: Any) -> Any:
    """A config field added after artifacts were cached under the config's old fields: :meth:`Config.to_dict`
    leaves it out while it holds ``default`` (which must reproduce the old behaviour), so the cache keys and saved
    recipes of every config that does not set it stay what they were. ``default`` must be immutable."""
    return dataclasses.field(default=default, metadata={KEYED_WHEN_SET: True})


def check_choice(owner: str, field: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{field}={value!r} is not valid; choose one of {sorted(choices)}")


def check_range(owner: str, field: str, value, low=None, high=None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{owner}.{field}={value!r} is outside {bounds}")


def check_float_layers(config) -> None:
    """``config.float_layers``: a tuple of distinct layer indices >= 0 (transformer layers kept float)."""
    layers = config.float_layers
    if (not isinstance(layers, tuple) or not all(isinstance(i, int) and i >= 0 for i in layers)
            or len(set(layers)) != len(layers)):
        raise ConfigError(f"{type(config).__name__}.float_layers={layers!r} must be a tuple of distinct layer "
                          "indices >= 0")
