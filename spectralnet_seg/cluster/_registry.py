"""String registry of clustering estimators, in the style of timm's model registry.

The command line, the demo and the benchmarks pick estimators by name; this is the one
place that turns a name into an estimator, so adding an estimator is one registration.

>>> from spectralnet_seg.cluster import list_estimators, make_estimator
>>> list_estimators()
['discrete', 'eigsh', 'kmeans', 'neural']
>>> make_estimator("eigsh", 5, embedding_norm="degree").n_clusters
5
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .._registry import Registry

__all__ = ["ESTIMATORS", "estimator_defaults", "list_estimators", "make_estimator",
           "register_estimator"]

ESTIMATORS = Registry("estimator")
"""The estimator registry (see
[`spectralnet_seg._registry.Registry`][spectralnet_seg._registry.Registry])."""


def register_estimator(name: str) -> Callable[[Callable], Callable]:
    """Decorator that registers an estimator class (or factory) under ``name``.

    The constructor takes its parameters as keywords, as scikit-learn's clusterers do
    (``n_clusters`` among them, for [`make_estimator`][make_estimator]'s second argument).

    Parameters
    ----------
    name : str
        Registry key, lower case (e.g. ``"eigsh"``).

    Examples
    --------
    >>> from sklearn.cluster import AgglomerativeClustering
    >>> _ = register_estimator("ward-example")(AgglomerativeClustering)
    >>> make_estimator("ward-example", 3).n_clusters
    3
    >>> ESTIMATORS.unregister("ward-example") is AgglomerativeClustering
    True
    """
    return ESTIMATORS.register(name)


def list_estimators(pattern: str = "*") -> list[str]:
    """Names of the registered estimators matching a shell-style ``pattern``, sorted."""
    return ESTIMATORS.list(pattern)


def _parameter_names(constructor: Callable) -> set[str] | None:
    """Keyword parameters of ``constructor`` (None when it takes ``**kwargs``)."""
    params = inspect.signature(constructor).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _requires_n_clusters(constructor: Callable) -> bool:
    parameter = inspect.signature(constructor).parameters.get("n_clusters")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def make_estimator(name: str, n_clusters: int | None = None, **params):
    """Build a registered estimator by name; unset parameters keep the estimator's defaults.

    Parameters
    ----------
    name : str
        One of [`list_estimators`][list_estimators]: ``"eigsh"``
        ([`EigshSpectralClustering`][spectralnet_seg.cluster.EigshSpectralClustering]), ``"neural"``
        ([`NeuralEigenClustering`][spectralnet_seg.cluster.NeuralEigenClustering]), ``"discrete"``
        ([`DiscreteNeuralEigenClustering`][spectralnet_seg.cluster.DiscreteNeuralEigenClustering]),
        ``"kmeans"``
        (``sklearn.cluster.KMeans``), or one registered with
        [`register_estimator`][register_estimator].
    n_clusters : int or None, default=None
        Number of clusters; None keeps the estimator's own default (8 for the built-in
        ones, 2 for scikit-learn's ``AgglomerativeClustering``; 8 for a constructor that
        requires it).
    **params
        Other constructor parameters of that estimator.

    Returns
    -------
    estimator
        Unfitted.

    Raises
    ------
    ValueError
        For an unknown name, or parameters the estimator does not take (the message lists
        the ones it does).
    """
    constructor = ESTIMATORS.entry(name).constructor
    accepted = _parameter_names(constructor)
    unknown = [] if accepted is None else sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"estimator {name!r} ({getattr(constructor, '__name__', constructor)}) has no "
            f"parameter(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    if n_clusters is None:
        if _requires_n_clusters(constructor):  # no default of its own: scikit-learn's usual 8
            return constructor(n_clusters=8, **params)
        return constructor(**params)
    if accepted is not None and "n_clusters" not in accepted:
        raise ValueError(f"estimator {name!r} takes no n_clusters (it takes "
                         f"{', '.join(sorted(accepted))}); leave n_clusters out.")
    return constructor(n_clusters=n_clusters, **params)


def estimator_defaults(name: str) -> dict:
    """The constructor defaults of a registered estimator (``get_params`` of a fresh one).

    Parameters
    ----------
    name : str
        One of [`list_estimators`][list_estimators].

    Returns
    -------
    dict
        Parameter name to default value.
    """
    return make_estimator(name).get_params(deep=False)
