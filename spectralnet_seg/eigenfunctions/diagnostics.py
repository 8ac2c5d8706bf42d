"""Diagnostics for learned eigenfunctions: subspace alignment, eigenvalues, orthogonality."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import orth, svdvals

__all__ = ["AlignmentReport", "eigenfunction_alignment", "orthogonality_error"]


@dataclass(frozen=True)
class AlignmentReport:
    """Result of [`eigenfunction_alignment`][eigenfunction_alignment].

    Attributes
    ----------
    cosines : ndarray of shape (k,)
        Cosines of the principal angles between the two k-dimensional subspaces, in
        decreasing order (1 = shared direction, 0 = orthogonal).
    mean_cosine : float
        Mean of ``cosines``.
    eigenvalues : ndarray of shape (k,) or None
        The estimator's eigenvalue estimates (top k), when it has ``eigenvalues_``.
    reference_eigenvalues : ndarray of shape (k,) or None
        The reference eigenvalues (top k), when known.
    eigenvalue_relative_errors : ndarray of shape (k,) or None
        ``|λ_est − λ_ref| / |λ_ref|`` per eigenvalue, when both are known.
    """

    cosines: np.ndarray
    mean_cosine: float
    eigenvalues: np.ndarray | None = None
    reference_eigenvalues: np.ndarray | None = None
    eigenvalue_relative_errors: np.ndarray | None = None

    @property
    def max_eigenvalue_relative_error(self) -> float | None:
        """Largest relative eigenvalue error, or None when eigenvalues are unknown."""
        errors = self.eigenvalue_relative_errors
        return None if errors is None else float(np.max(errors))


def eigenfunction_alignment(estimator, X, reference, *,
                            reference_eigenvalues=None) -> AlignmentReport:
    """Compare learned eigenfunctions with reference eigenvectors on the same data.

    The learned subspace spanned by the columns of ``estimator.transform(X)`` is compared
    with the span of the reference eigenvectors through the cosines of their principal
    angles (the singular values of ``Q_a^T Q_b`` for orthonormal bases from scipy's
    ``orth``); this is invariant to signs, scaling and to
    rotations inside eigenspaces of (nearly) equal eigenvalues, which is the most one can
    ask of an eigenfunction estimate. Eigenvalue estimates are compared one by one.

    Parameters
    ----------
    estimator : fitted estimator or ndarray of shape (n_samples, K)
        A fitted [`NeuralEigenClustering`][spectralnet_seg.cluster.NeuralEigenClustering] (anything
        with
        ``transform`` and, optionally, ``eigenvalues_``), or the embedding itself.
    X : array-like of shape (n_samples, n_features)
        The data the reference eigenvectors are defined on (typically the training set of
        both). Only used to compute ``estimator.transform(X)``.
    reference : fitted estimator or ndarray of shape (n_samples, K_ref)
        A fitted [`EigshSpectralClustering`][spectralnet_seg.cluster.EigshSpectralClustering] on the
        same
        ``X`` and kernel, or an array of reference eigenfunctions, columns in decreasing
        eigenvalue order. The neural estimators learn the random-walk eigenfunctions
        ``D^{-1/2} u``, so an eigsh reference contributes ``embedding_ / sqrt(degree_)``
        (its eigenvectors ``u`` of ``D^{-1/2} W D^{-1/2}`` in the same space) and its
        ``eigenvalues_``.
    reference_eigenvalues : array-like of shape (K_ref,), optional
        Reference eigenvalues when ``reference`` is an array.

    Returns
    -------
    AlignmentReport
        Over the top ``k = min(K, K_ref)`` directions.

    Raises
    ------
    ValueError
        If the embeddings do not have the same number of rows.
    """
    embedding = np.asarray(
        estimator if isinstance(estimator, np.ndarray) else estimator.transform(X),
        dtype=np.float64)
    if hasattr(reference, "embedding_"):
        ref_values = getattr(reference, "eigenvalues_", None)
        degree = getattr(reference, "degree_", None)
        reference = np.asarray(reference.embedding_, dtype=np.float64)
        if degree is not None:
            scale = np.sqrt(np.asarray(degree, dtype=np.float64))[:, None]
            reference = np.divide(reference, scale, out=np.zeros_like(reference),
                                  where=scale > 0)
    else:
        ref_values = reference_eigenvalues
    reference = np.asarray(reference, dtype=np.float64)
    if embedding.ndim != 2 or reference.ndim != 2:
        raise ValueError("the embedding and the reference must be 2-D (n_samples, K) arrays")
    if embedding.shape[0] != reference.shape[0]:
        raise ValueError(
            f"the estimator's embedding of X has {embedding.shape[0]} rows but the reference "
            f"has {reference.shape[0]}; the reference must be computed on the same X"
        )
    k = min(embedding.shape[1], reference.shape[1])
    # The cosines themselves, not cos(scipy's subspace_angles): its angles near pi/2 come
    # from arcsin of values near 1, whose cosines are off by ~1e-8 (sqrt of float64's eps).
    cosines = svdvals(orth(embedding[:, :k]).T @ orth(reference[:, :k]))
    # One cosine per direction of the smaller span: a collapsed (repeated or dead)
    # eigenfunction spans fewer than k directions, and the missing ones are orthogonal to
    # what it should have matched (cosine 0), not left out of the mean.
    cosines = np.pad(np.clip(cosines, 0.0, 1.0), (0, k - cosines.size))

    est_values = getattr(estimator, "eigenvalues_", None)
    est_values = None if est_values is None else np.asarray(est_values, dtype=np.float64)[:k]
    ref_values = None if ref_values is None else np.asarray(ref_values, dtype=np.float64)[:k]
    errors = None
    if est_values is not None and ref_values is not None:
        errors = np.abs(est_values - ref_values) / np.maximum(np.abs(ref_values), 1e-12)
    return AlignmentReport(cosines=cosines, mean_cosine=float(cosines.mean()),
                           eigenvalues=est_values, reference_eigenvalues=ref_values,
                           eigenvalue_relative_errors=errors)


def orthogonality_error(embedding, weights=None) -> float:
    """Largest |cosine| between two different columns of an embedding.

    0 for exactly orthogonal eigenfunctions (over the rows given), 1 when two columns are
    parallel. Eigenfunctions of a graph are orthogonal in the degree-weighted inner product
    ``Σ_i d_i f(x_i) g(x_i)``, not the plain one: pass the degrees as ``weights`` for
    ``estimator.transform(X_train)`` (or use the eigenvectors ``ψ · sqrt(d)``); without them
    columns of a graph with uneven degrees can look far from orthogonal.

    Parameters
    ----------
    embedding : array-like of shape (n_samples, K)
        E.g. ``estimator.transform(X)``.
    weights : array-like of shape (n_samples,), optional
        Non-negative row weights of the inner product (e.g. the training degrees); None:
        all ones.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> orthogonality_error(np.eye(3))
    0.0
    """
    E = np.asarray(embedding, dtype=np.float64)
    if E.ndim != 2:
        raise ValueError(f"embedding must be 2-D (n_samples, K), got shape {E.shape}")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (E.shape[0],) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {E.shape[0]} finite non-negative numbers, one "
                             f"per row; got shape {w.shape}")
        E = E * np.sqrt(w)[:, None]
    if E.shape[1] < 2:
        return 0.0
    norms = np.linalg.norm(E, axis=0)
    E = E / np.where(norms > 0, norms, 1.0)
    gram = np.abs(E.T @ E)
    np.fill_diagonal(gram, 0.0)
    return float(gram.max())
