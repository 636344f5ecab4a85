"""A tiny strict registry: one dict and a decorator per concept (models, adapters, branch builders, ...)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry name. Its message is one readable line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object mapping that refuses duplicates and suggests close names for typos.

    Example:
        >>> reg = Registry("colour")
        >>> @reg.register("red")
        ... def red(): return "#f00"
        >>> reg.get("red")()
        '#f00'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (default: its ``__name__``) with optional metadata."""

        def deco(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise RegistryError(f"{self.kind} registry already has an entry named {key!r}")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered under ``name``; an unknown name raises with a 'did you mean' suggestion."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(self._items))}"
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given at registration."""
        self.get(name)
        return self._meta[name]

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the fnmatch ``pattern``."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
