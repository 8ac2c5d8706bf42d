"""The math of the eigsh baseline: normalised affinity, top eigenvectors, Nyström extension.

Free functions, usable without any estimator (the estimator in ``_eigsh`` is a thin
validated wrapper around them), modelled on ``sklearn/manifold/_spectral_embedding.py``.

Conventions: ``W`` is a symmetric non-negative affinity, ``d = W 1`` its degree and
``M = D^{-1/2} W D^{-1/2}`` the normalised affinity. The spectral embedding is made of the
top-K eigenvectors of ``M`` (equivalently the bottom-K of the normalised Laplacian
``L = I - M``), in decreasing eigenvalue order, with unit-norm columns.

One module per step; this package gathers their names:

- ``affinity`` — validate an affinity, normalise it, check the graph it defines;
- ``embedding`` — the top eigenpairs of ``M`` (``spectral_embedding``) and the best
  approximation of them within a given basis (``rayleigh_ritz``);
- ``nystrom`` — the embedding of new points (Nyström extension);
- ``clustering`` — spectral clustering of a precomputed affinity: embedding, then labels.
"""

from .._eigensolvers import EigenSolverConvergenceError
from .affinity import (
    DisconnectedGraphWarning,
    check_affinity,
    normalized_affinity,
)
from .affinity import _check_has_edges as _check_has_edges
from .affinity import _components_and_warn as _components_and_warn
from .clustering import spectral_clustering
from .embedding import _AMG_MAX_TOL as _AMG_MAX_TOL
from .embedding import _DENSE_MAX_NODES as _DENSE_MAX_NODES
from .embedding import _sign_flip as _sign_flip
from .embedding import rayleigh_ritz, spectral_embedding
from .nystrom import IsolatedPointWarning, nystrom_extension

__all__ = [
    "DisconnectedGraphWarning",
    "EigenSolverConvergenceError",
    "IsolatedPointWarning",
    "check_affinity",
    "normalized_affinity",
    "nystrom_extension",
    "rayleigh_ritz",
    "spectral_clustering",
    "spectral_embedding",
]
