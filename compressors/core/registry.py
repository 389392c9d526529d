"""Name -> entry registries that fail loudly.

Registration checks the name at import time (lowercase, no spaces, unique), so a
typo or a duplicate breaks ``import compressors`` rather than the 40th test.
Lookups of unknown names raise an error that lists every valid name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from compressors import CompressbenchError

T = TypeVar("T")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$|^[a-z0-9]$")


class RegistryError(CompressbenchError, KeyError):
    """Unknown, duplicate or malformed registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return self.args[0] if self.args else ""


class Registry(Generic[T]):
    """A mapping of names to entries, plus optional name families.

    A family is a regex with one group per parameter and a factory that builds
    the entry from the match (``layerdrop-(\\d+)`` -> ``LayerDropConfig(drop=K)``),
    for techniques parametrised in their name.

    Args:
        kind: what the entries are, for messages ("model", "technique").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._families: list[tuple[re.Pattern, str, Callable[[re.Match], T]]] = []

    def register(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not NAME_RE.match(name) or "+" in name:
            raise RegistryError(f"invalid {self.kind} name {name!r}: use lowercase letters, digits, '-' and '.'")
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register_family(self, pattern: str, example: str, factory: Callable[[re.Match], T]) -> None:
        """Register names matching ``pattern`` (full match); ``example`` is shown in error messages."""
        compiled = re.compile(pattern)
        if not compiled.fullmatch(example):
            raise RegistryError(f"{self.kind} family {pattern!r}: its example {example!r} does not match it")
        self._families.append((compiled, example, factory))

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        for pattern, _example, factory in self._families:
            match = pattern.fullmatch(name)
            if match:
                return factory(match)
        raise RegistryError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {self.describe_names()}")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except RegistryError:
            return False
        return True

    def names(self) -> list[str]:
        return list(self._entries)

    def families(self) -> list[tuple[str, str, T]]:
        """Each family registered by pattern: (its regular expression, its example name, the entry of the example)."""
        return [(pattern.pattern, example, factory(pattern.fullmatch(example))) for pattern, example, factory
                in self._families]

    def describe_names(self) -> str:
        names = list(self._entries) + [f"{pattern.pattern} (e.g. {example})" for pattern, example, _ in self._families]
        return ", ".join(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()
