"""One generic name -> entry table for every registry (tasks, task kinds, heads, objectives, alignment
metrics, parallel data, training sets), with one "unknown name" error."""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that is not in a registry; the message lists the registered names."""


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what  # e.g. "task", "training set": used in the error message
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str):
        """Decorator form: ``@REG.register("name")``."""
        def deco(entry: T) -> T:
            return self.add(name, entry)
        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.what} '{name}'; registered: {', '.join(self._entries)}")
        return self._entries[name]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()
