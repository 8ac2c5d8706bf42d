"""Out-of-sample points: the Nyström extension of the spectral embedding to new points."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..._utils import user_stacklevel
from ...kernels import degree_normalize

__all__ = ["IsolatedPointWarning", "nystrom_extension"]


class IsolatedPointWarning(UserWarning):
    """A point has zero affinity to every fitted point; its Nyström embedding is zero."""


def nystrom_extension(cross_affinity, train_degree, eigenvectors, eigenvalues) -> np.ndarray:
    """Embed new points with the Nyström extension of the normalised affinity.

    For a new point ``y`` with affinities ``C(y, j)`` to the fitted points,

    ``u_k(y) = (1 / λ_k) Σ_j C(y, j) / sqrt(d(y) d_j) u_k(j)``,  ``d(y) = Σ_j C(y, j)``,

    which reproduces ``u_k`` exactly when ``C`` is the training affinity itself
    (Bengio et al., 2004).

    Parameters
    ----------
    cross_affinity : {array-like, sparse matrix} of shape (n_queries, n_samples_fit)
        Non-negative affinities of the new points to the fitted points.
    train_degree : ndarray of shape (n_samples_fit,)
        Degrees ``d_j`` of the training affinity.
    eigenvectors : ndarray of shape (n_samples_fit, n_components)
        Training eigenvectors ``u_k`` of ``M``.
    eigenvalues : ndarray of shape (n_components,)
        Matching eigenvalues ``λ_k``.

    Returns
    -------
    embedding : ndarray of shape (n_queries, n_components)
        Rows of points with no affinity to any fitted point are zero (with an
        [`IsolatedPointWarning`][IsolatedPointWarning]); columns whose eigenvalue is ~0 are zero,
        since
        the extension is undefined there.
    """
    C = sp.csr_matrix(cross_affinity, dtype=np.float64)
    train_degree = np.asarray(train_degree, dtype=np.float64)
    eigenvectors = np.asarray(eigenvectors, dtype=np.float64)
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if eigenvectors.ndim != 2 or eigenvalues.shape != (eigenvectors.shape[1],):
        # One eigenvalue would broadcast over every column, dividing each by λ_1.
        raise ValueError(
            f"eigenvectors must be 2-D (n_samples_fit, n_components) with one eigenvalue "
            f"per column, got shapes {eigenvectors.shape} and {eigenvalues.shape}.")
    if C.shape[1] != train_degree.shape[0] or C.shape[1] != eigenvectors.shape[0]:
        raise ValueError(
            f"cross_affinity has {C.shape[1]} columns but the fit used "
            f"{eigenvectors.shape[0]} samples; it must be (n_queries, n_samples_fit).")
    query_degree = np.asarray(C.sum(axis=1)).ravel()
    isolated = query_degree <= 0
    if isolated.any():
        warnings.warn(
            f"{int(isolated.sum())} of {C.shape[0]} new points have zero affinity to every "
            "fitted point; their embedding is zero.", IsolatedPointWarning,
            stacklevel=user_stacklevel())
    C_norm = degree_normalize(C, query_degree, column_degree=train_degree)
    tiny = np.abs(eigenvalues) < 1e-10
    inv_lam = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, eigenvalues))
    return np.asarray(C_norm @ eigenvectors) * inv_lam
