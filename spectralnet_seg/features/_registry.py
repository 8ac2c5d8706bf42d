"""String registry of feature extractors, in the style of timm's model registry.

A name is either a registered key (``"pixel"``, ``"precomputed"``) or ``"<key>:<argument>"``
for keys registered with an argument, such as ``"timm:vit_small_patch16_384"`` where the
argument is the timm model name.

>>> from spectralnet_seg.features import list_extractors, make_extractor
>>> "pixel" in list_extractors()
True
>>> make_extractor("pixel", stride=4).stride
4
"""

from __future__ import annotations

from collections.abc import Callable

from .._registry import Registry
from ._base import FeatureExtractor

__all__ = ["EXTRACTORS", "register_extractor", "make_extractor", "list_extractors"]

EXTRACTORS = Registry("extractor", hint="(timm models as 'timm:<name>')")
"""The extractor registry; an entry's ``argument`` metadata names the keyword that the
``":<argument>"`` part of a name fills (None: the name takes no argument)."""


def register_extractor(name: str, *, argument: str | None = None) -> Callable:
    """Class decorator that registers an extractor constructor under ``name``.

    Parameters
    ----------
    name : str
        Registry key, lower case, without ``":"``.
    argument : str, optional
        Keyword of the constructor that ``make_extractor("<name>:<value>")`` sets to
        ``value`` (e.g. ``"model_name"`` for ``"timm"``). ``None``: the name takes no
        argument.
    """
    if ":" in name:
        raise ValueError(f"extractor names cannot contain ':', got {name!r}")
    return EXTRACTORS.register(name, argument=argument)


def list_extractors(pattern: str = "*") -> list[str]:
    """Names of the registered extractors matching a shell-style ``pattern``, sorted.

    A pattern starting with ``"timm:"`` lists timm models instead, as ``"timm:<model>"``
    (e.g. ``list_extractors("timm:vit_small_patch8*")``).
    """
    if pattern.startswith("timm:"):
        import timm

        return [f"timm:{m}" for m in timm.list_models(pattern[len("timm:"):])]
    return EXTRACTORS.list(pattern)


def make_extractor(name: str, **params) -> FeatureExtractor:
    """Build a registered extractor by name.

    Parameters
    ----------
    name : str
        One of [`list_extractors`][list_extractors], or ``"<key>:<argument>"`` for keys that take
        one
        (``"timm:vit_small_patch16_384"``).
    **params
        Other constructor parameters of that extractor.

    Returns
    -------
    FeatureExtractor
    """
    if not isinstance(name, str):
        raise TypeError(f"extractor name must be a string, got {type(name).__name__}")
    key, sep, value = name.partition(":")
    # an unknown key fails with the full name in the message ("unknown extractor 'x:y'")
    entry = EXTRACTORS.entry(key if key in EXTRACTORS else name)
    argument = entry.metadata["argument"]
    if sep and argument is None:
        raise ValueError(f"extractor {key!r} takes no ':<argument>' suffix, got {name!r}")
    if argument is not None:
        if not value and argument not in params:
            raise ValueError(f"extractor {key!r} needs an argument, e.g. '{key}:<{argument}>'")
        if value:
            if argument in params:
                raise ValueError(f"{argument} given twice: in the name {name!r} and as a "
                                 "keyword")
            params[argument] = value
    return entry.constructor(**params)
