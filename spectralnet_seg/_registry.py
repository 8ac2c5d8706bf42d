"""One generic name → constructor registry, in the style of timm's model registry.

Kernels, feature extractors, datasets and clustering estimators are all picked by name
(``make_kernel("knn")``, ``make_extractor("pixel")``, ``make_dataset("mosaics")``,
``make_estimator("eigsh")``). Each kind owns one [`Registry`][Registry]; its public functions
(``register_*``, ``make_*``, ``list_*``) are thin wrappers around
[`Registry.register`][Registry.register],
[`Registry.create`][Registry.create] and [`Registry.list`][Registry.list], so a new kernel,
extractor, dataset or
estimator is one new file plus one registration line, and callers never change.

>>> from spectralnet_seg._registry import Registry
>>> shapes = Registry("shape")
>>> @shapes.register("square")
... class Square:
...     def __init__(self, side=1.0):
...         self.side = side
>>> shapes.list(), shapes.create("square", side=2.0).side
(['square'], 2.0)
>>> shapes.create("circle")
Traceback (most recent call last):
...
ValueError: unknown shape 'circle'; available shapes: square
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Registry", "RegistryEntry"]


@dataclass(frozen=True)
class RegistryEntry:
    """A registered constructor and what was declared with it.

    Attributes
    ----------
    name : str
        Registry key.
    constructor : callable
        Class or factory function that builds the object.
    metadata : dict
        Keyword arguments given to [`Registry.register`][Registry.register] besides the name (e.g.
        the
        ``argument`` of ``"timm:<model>"`` extractor names).
    """

    name: str
    constructor: Callable[..., Any]
    metadata: dict = field(default_factory=dict)


class Registry:
    """Names to constructors for one kind of object (kernel, extractor, dataset, estimator).

    Parameters
    ----------
    kind : str
        What is registered, singular (``"kernel"``); used in error messages.
    hint : str, default=""
        Appended to the "unknown name" message (e.g. how timm models are named).

    Examples
    --------
    >>> colors = Registry("color")
    >>> _ = colors.register("red")(lambda: (255, 0, 0))
    >>> colors.create("red"), "red" in colors, list(colors)
    ((255, 0, 0), True, ['red'])
    >>> colors.unregister("red")()
    (255, 0, 0)
    >>> colors.list()
    []
    """

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, RegistryEntry] = {}

    def register(self, name: str, **metadata) -> Callable[[Callable], Callable]:
        """Decorator that registers a constructor (class or factory) under ``name``.

        Parameters
        ----------
        name : str
            Registry key, lower case (e.g. ``"knn"``).
        **metadata
            Stored with the constructor ([`RegistryEntry.metadata`][RegistryEntry.metadata]).

        Returns
        -------
        callable
            The decorator; it returns the constructor unchanged.

        Raises
        ------
        ValueError
            When ``name`` is already registered (names are never silently replaced).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def decorator(constructor: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{_article(self.kind)} {self.kind} named {name!r} is "
                                 "already registered")
            self._entries[name] = RegistryEntry(name, constructor, dict(metadata))
            return constructor

        return decorator

    def unregister(self, name: str) -> Callable:
        """Remove ``name`` and return its constructor (tests and plug-in reloads use it)."""
        self.entry(name)  # the "unknown name" error for names never registered
        return self._entries.pop(name).constructor

    def entry(self, name: str) -> RegistryEntry:
        """The [`RegistryEntry`][RegistryEntry] of ``name``.

        Raises
        ------
        ValueError
            For an unknown name; the message lists the registered ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = f" {self.hint}" if self.hint else ""
            raise ValueError(f"unknown {self.kind} {name!r}; available {self.kind}s: "
                             f"{', '.join(self.list())}{hint}") from None

    def create(self, name: str, *args, **params) -> Any:
        """Build the object registered under ``name`` with ``constructor(*args, **params)``."""
        return self.entry(name).constructor(*args, **params)

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern`` (``"k*"``), sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.list()})"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
