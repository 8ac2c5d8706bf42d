"""The affinity of the eigsh baseline: validation, normalisation and checks of its graph.

``W`` is a symmetric non-negative affinity, ``d = W 1`` its degree and
``M = D^{-1/2} W D^{-1/2}`` the normalised affinity that the spectral embedding decomposes.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..._utils import user_stacklevel
from ...kernels import degree_normalize

__all__ = ["DisconnectedGraphWarning", "check_affinity", "normalized_affinity"]


class DisconnectedGraphWarning(UserWarning):
    """The affinity graph has more than one connected component.

    The top eigenvectors then mostly indicate the components, and points of a component
    with no link to the rest cannot be told apart from it by the embedding.
    """


def check_affinity(W, *, name: str = "affinity", symmetric: bool = True) -> sp.csr_matrix:
    """Validate an affinity matrix and return it as float64 CSR.

    Parameters
    ----------
    W : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Non-negative, finite affinity. Must be symmetric when ``symmetric=True``.
    name : str, default="affinity"
        Name used in error messages.
    symmetric : bool, default=True
        Check that ``W`` is square and symmetric (up to rounding).

    Returns
    -------
    W : scipy.sparse.csr_matrix of shape (n_samples, n_samples)

    Raises
    ------
    ValueError
        If ``W`` is not 2-D, empty, not finite, negative, not square or not symmetric.
    """
    from sklearn.utils import check_array

    W = check_array(W, accept_sparse=["csr", "csc", "coo"], dtype=np.float64,
                    ensure_all_finite=True, input_name=name)
    W = sp.csr_matrix(W)
    if W.nnz and not W.data.all():
        # A stored 0 is no edge, but connected_components counts it as one: a disconnected
        # graph then passed as connected (no warning, and eigsh's multiple eigenvalue 1 went
        # unhandled). Drop them, on a copy: the csr_matrix may share the caller's arrays.
        W = W.copy()
        W.eliminate_zeros()
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"{name} has negative entries (min {W.data.min():.3g}); "
                         "affinities must be non-negative.")
    if symmetric:
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"{name} must be square (n_samples, n_samples), got shape "
                             f"{W.shape}.")
        asym = abs(W - W.T)
        # Relative to the largest weight alone: a graph of weights ~1e-9 is as asymmetric
        # as the same graph of weights ~1.
        if asym.nnz and asym.max() > 1e-8 * abs(W).max():
            raise ValueError(f"{name} must be symmetric (max |W - W.T| = {asym.max():.3g}); "
                             "symmetrise it, e.g. (W + W.T) / 2.")
    return W


def normalized_affinity(W) -> tuple[sp.csr_matrix, np.ndarray]:
    """Normalised affinity ``M = D^{-1/2} W D^{-1/2}`` and the degrees ``d = W 1``.

    Parameters
    ----------
    W : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric non-negative affinity.

    Returns
    -------
    M : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Normalised affinity; rows of isolated points (zero degree) are zero.
    degree : ndarray of shape (n_samples,)
        Row sums of ``W``.
    """
    W = sp.csr_matrix(W, dtype=np.float64)
    degree = np.asarray(W.sum(axis=1)).ravel()
    return degree_normalize(W, degree), degree


def _components_and_warn(W: sp.csr_matrix, *, warn: bool = True) -> np.ndarray:
    """Connected-component id of each node, warning when there is more than one component."""
    n_comp, labels = connected_components(W, directed=False)
    if warn and n_comp > 1:
        warnings.warn(
            f"the affinity graph has {n_comp} connected components; the leading "
            "eigenvectors will mostly separate the components. Increase the kernel's "
            "n_neighbors (or bandwidth) to connect the graph.",
            DisconnectedGraphWarning, stacklevel=user_stacklevel())
    return labels


def _check_has_edges(degree: np.ndarray) -> None:
    """Refuse a graph without a single edge: every vector is then an eigenvector (of 0)."""
    if degree.size > 1 and not np.any(degree > 0):
        raise ValueError(
            f"the affinity graph has no edges: all {degree.size} points have zero affinity to "
            "every other point, so the spectral embedding is arbitrary. The kernel does not "
            "fit the scale of the data: with RBFKernel(gamma=...) the points are too far "
            "apart for gamma (lower it, use bandwidth='self-tuning', or rescale X); kNN "
            "kernels always have edges.")

