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
        return {"type": type(self).__name__, **dataclasses.asdict(self)}


def check_choice(owner: str, field: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{field}={value!r} is not valid; choose one of {sorted(choices)}")


def check_range(owner: str, field: str, value, low=None, high=None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{owner}.{field}={value!r} is outside {bounds}")
