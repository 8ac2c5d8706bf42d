"""The math of the eigsh baseline: normalised affinity, top eigenvectors, Nyström extension.

Free functions, usable without any estimator (the estimator in ``_eigsh`` is a thin
validated wrapper around them), modelled on ``sklearn/manifold/_spectral_embedding.py``.

Conventions: ``W`` is a symmetric non-negative affinity, ``d = W 1`` its degree and
``M = D^{-1/2} W D^{-1/2}`` the normalised affinity. The spectral embedding is made of the
top-K eigenvectors of ``M`` (equivalently the bottom-K of the normalised Laplacian
``L = I - M``), in decreasing eigenvalue order, with unit-norm columns.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..kernels import degree_normalize
from ._assign import cluster_embedding
from ._base import check_n_clusters
from ._eigensolvers import (
    ARPACK_MODES,
    EIGEN_SOLVERS,
    EigenSolverConvergenceError,
    arpack_mode_for,
    require_pyamg,
    solve_arpack,
    solve_dense,
    solve_lobpcg,
)

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

# Below this many nodes a dense eigendecomposition is both faster and always converges;
# iterative solvers also misbehave on tiny problems (LOBPCG needs n >> K).
_DENSE_MAX_NODES = 200

# Loosest tolerance "auto" gives the AMG-preconditioned LOBPCG (see spectral_embedding).
_AMG_MAX_TOL = 1e-3


class DisconnectedGraphWarning(UserWarning):
    """The affinity graph has more than one connected component.

    The top eigenvectors then mostly indicate the components, and points of a component
    with no link to the rest cannot be told apart from it by the embedding.
    """


class IsolatedPointWarning(UserWarning):
    """A point has zero affinity to every fitted point; its Nyström embedding is zero."""


# ---------------------------------------------------------------------------- affinity


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
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"{name} has negative entries (min {W.data.min():.3g}); "
                         "affinities must be non-negative.")
    if symmetric:
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"{name} must be square (n_samples, n_samples), got shape "
                             f"{W.shape}.")
        asym = abs(W - W.T)
        scale = max(abs(W).max(), 1.0) if W.nnz else 1.0
        if asym.nnz and asym.max() > 1e-8 * scale:
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


def _n_components_and_warn(W: sp.csr_matrix) -> int:
    n_comp, _ = connected_components(W, directed=False)
    if n_comp > 1:
        warnings.warn(
            f"the affinity graph has {n_comp} connected components; the leading "
            "eigenvectors will mostly separate the components. Increase the kernel's "
            "n_neighbors (or bandwidth) to connect the graph.",
            DisconnectedGraphWarning, stacklevel=3)
    return n_comp


def _check_has_edges(degree: np.ndarray) -> None:
    """Refuse a graph without a single edge: every vector is then an eigenvector (of 0)."""
    if degree.size > 1 and not np.any(degree > 0):
        raise ValueError(
            f"the affinity graph has no edges: all {degree.size} points have zero affinity to "
            "every other point, so the spectral embedding is arbitrary. The kernel does not "
            "fit the scale of the data: with RBFKernel(gamma=...) the points are too far "
            "apart for gamma (lower it, use bandwidth='self-tuning', or rescale X); kNN "
            "kernels always have edges.")


# ---------------------------------------------------------------------------- embedding


def _sign_flip(U: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive (deterministic).

    Same rule as scikit-learn's ``_deterministic_vector_sign_flip``; it is invariant to a
    permutation of the rows.
    """
    idx = np.abs(U).argmax(axis=0)
    signs = np.sign(U[idx, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


@validate_params(
    {
        "W": ["array-like", "sparse matrix"],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "eigen_solver": [StrOptions(set(EIGEN_SOLVERS))],
        "eigen_tol": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "check_connectivity": ["boolean"],
        "arpack_mode": [StrOptions(set(ARPACK_MODES))],
    },
    prefer_skip_nested_validation=True,
)
def spectral_embedding(
    W,
    n_components: int = 8,
    *,
    eigen_solver: str = "arpack",
    eigen_tol: float | str = "auto",
    max_iter: int | None = None,
    random_state=None,
    check_connectivity: bool = True,
    arpack_mode: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top eigenpairs of the normalised affinity ``M = D^{-1/2} W D^{-1/2}``.

    Parameters
    ----------
    W : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric non-negative affinity.
    n_components : int, default=8
        Number of eigenpairs K (at most ``n_samples``).
    eigen_solver : {"arpack", "lobpcg", "amg"}, default="arpack"
        ``"arpack"``: ``scipy.sparse.linalg.eigsh``, in the mode ``arpack_mode``
        chooses; ``"lobpcg"``: ``scipy.sparse.linalg.lobpcg`` on the Laplacian;
        ``"amg"``: LOBPCG preconditioned by pyamg's smoothed aggregation (the ``amg``
        extra). Graphs with fewer than 200 nodes always use a dense solver.
    eigen_tol : float or "auto", default="auto"
        Solver tolerance; ``"auto"`` is 0 (machine precision) for ARPACK, LOBPCG's own
        default ``n·sqrt(eps)`` for ``"lobpcg"``, and ``min(n·sqrt(eps), 1e-3)`` for
        ``"amg"``: LOBPCG's default loosens with ``n``, and past ~7·10⁴ nodes it stopped
        the preconditioned solver after a few iterations, before the nearly equal
        eigenvalues of a pixel graph were resolved (coins at full resolution: normalised
        cut 0.13-0.19 depending on the seed, 0.115-0.120 with 1e-3).
    max_iter : int, optional
        Iteration cap of the iterative solvers (their defaults when None).
    random_state : int, RandomState instance or None, default=None
        Seeds the solver's start vectors, which makes the result deterministic.
    check_connectivity : bool, default=True
        Warn ([`DisconnectedGraphWarning`][DisconnectedGraphWarning]) when the graph is
        disconnected.
    arpack_mode : {"auto", "normal", "shift-invert"}, default="auto"
        ARPACK's mode: ``"normal"`` runs Lanczos on ``M`` (largest algebraic
        eigenvalues); ``"shift-invert"`` on ``(L + 1e-5 I)^{-1}`` with ``L = I - M``, as
        scikit-learn's ``spectral_embedding`` does, after a sparse LU factorisation of
        ``L``. ``"auto"`` takes shift-invert for nearly planar graphs (pixel grids, where
        the top eigenvalues are packed close to 1 and normal mode crawls, and the
        factorisation is cheap) and normal mode otherwise (kNN graphs, whose
        factorisation fills in); the test is the mean bandwidth of the graph in reverse
        Cuthill–McKee order, at most 2√n.

    Returns
    -------
    eigenvalues : ndarray of shape (n_components,)
        Eigenvalues of ``M``, in decreasing order (1 is the largest possible).
    eigenvectors : ndarray of shape (n_samples, n_components)
        Matching eigenvectors, unit-norm columns, signs fixed so that each column's
        largest-magnitude entry is positive.

    Raises
    ------
    EigenSolverConvergenceError
        If the iterative solver does not converge; the message names the knobs to turn.
    ImportError
        If ``eigen_solver="amg"`` and pyamg is not installed.
    """
    M, degree = normalized_affinity(W)
    n = M.shape[0]
    k = int(n_components)
    if not 1 <= k <= n:
        raise ValueError(f"n_components={k} must be between 1 and n_samples={n}.")
    _check_has_edges(degree)
    if eigen_solver == "amg":
        require_pyamg()  # fail the same way whatever the graph size
    if check_connectivity:
        _n_components_and_warn(M)
    rng = check_random_state(random_state)

    if n < _DENSE_MAX_NODES or n <= 5 * (k + 1):
        values, vectors = solve_dense(M, k)
    elif eigen_solver == "arpack":
        tol = 0.0 if eigen_tol == "auto" else float(eigen_tol)
        mode = arpack_mode_for(M) if arpack_mode == "auto" else arpack_mode
        values, vectors = solve_arpack(M, k, tol, max_iter, rng, mode=mode)
    else:
        tol = None if eigen_tol == "auto" else float(eigen_tol)
        if eigen_tol == "auto" and eigen_solver == "amg":
            tol = min(n * np.sqrt(np.finfo(np.float64).eps), _AMG_MAX_TOL)
        values, vectors = solve_lobpcg(M, degree, k, tol, max_iter, rng,
                                       preconditioner=eigen_solver, solver=eigen_solver)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    vectors = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    return values, _sign_flip(vectors)


def rayleigh_ritz(W, basis) -> tuple[np.ndarray, np.ndarray]:
    """Best approximations of the top eigenpairs of ``W f = λ D f`` within ``span(basis)``.

    Solves the K × K generalised problem ``(Fᵀ W F) v = λ (Fᵀ D F) v`` for the columns F of
    ``basis`` (Rayleigh–Ritz). ``F @ rotation`` then holds functions that are exactly
    D-orthonormal over the graph's nodes (``Σ_i d_i f_i² = 1``), ordered by decreasing
    Rayleigh quotient ``λ``; when F spans K eigenvectors these are the eigenpairs. It costs
    one sparse product W F: O(nnz · K).

    Parameters
    ----------
    W : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric non-negative affinity with degrees ``d = W 1``.
    basis : ndarray of shape (n_samples, K)
        Values of K functions at the nodes (e.g. a network's outputs).

    Returns
    -------
    values : ndarray of shape (K,)
        Ritz values, decreasing: the Rayleigh quotients of the rotated functions, which
        approximate the eigenvalues of ``D^{-1/2} W D^{-1/2}`` from below.
    rotation : ndarray of shape (K, K)
        ``F @ rotation`` are the Ritz vectors (random-walk eigenfunction estimates).

    Raises
    ------
    ValueError
        If the basis has no component of positive degree-weighted norm (all functions
        vanish on the nodes with edges).
    """
    from scipy.linalg import eigh as dense_eigh

    W = sp.csr_matrix(W, dtype=np.float64)
    F = np.asarray(basis, dtype=np.float64)
    degree = np.asarray(W.sum(axis=1)).ravel()
    A = F.T @ np.asarray(W @ F)
    B = F.T @ (F * degree[:, None])
    A, B = 0.5 * (A + A.T), 0.5 * (B + B.T)
    # Directions of F that vanish under the degree measure (or duplicate others) would make
    # B singular: restrict to the well-conditioned part of span(F) first.
    scale, vectors = np.linalg.eigh(B)
    keep = scale > max(scale.max(), 0.0) * 1e-10
    if not keep.any():
        raise ValueError("the basis functions vanish on every node with edges")
    whiten = vectors[:, keep] / np.sqrt(scale[keep])
    values, inner = dense_eigh(whiten.T @ A @ whiten)
    order = np.argsort(values)[::-1]
    rotation = np.zeros((F.shape[1], F.shape[1]))
    rotation[:, : keep.sum()] = whiten @ inner[:, order]
    values = np.concatenate([values[order], np.zeros(F.shape[1] - keep.sum())])
    return values, rotation


# ---------------------------------------------------------------------------- out of sample


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
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if C.shape[1] != train_degree.shape[0] or C.shape[1] != eigenvectors.shape[0]:
        raise ValueError(
            f"cross_affinity has {C.shape[1]} columns but the fit used "
            f"{eigenvectors.shape[0]} samples; it must be (n_queries, n_samples_fit).")
    query_degree = np.asarray(C.sum(axis=1)).ravel()
    isolated = query_degree <= 0
    if isolated.any():
        warnings.warn(
            f"{int(isolated.sum())} of {C.shape[0]} new points have zero affinity to every "
            "fitted point; their embedding is zero.", IsolatedPointWarning, stacklevel=2)
    C_norm = degree_normalize(C, query_degree, column_degree=train_degree)
    tiny = np.abs(eigenvalues) < 1e-10
    inv_lam = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, eigenvalues))
    return np.asarray(C_norm @ eigenvectors) * inv_lam


# ---------------------------------------------------------------------------- clustering


def spectral_clustering(
    affinity,
    n_clusters: int = 8,
    *,
    n_components: int | None = None,
    eigen_solver: str = "arpack",
    eigen_tol: float | str = "auto",
    assign_labels: str = "kmeans",
    embedding_norm: str | None = "degree",
    n_init: int = 10,
    random_state=None,
    return_embedding: bool = False,
):
    """Normalised spectral clustering of a precomputed affinity.

    Embeds the points with the top ``n_components`` eigenvectors of
    ``D^{-1/2} W D^{-1/2}`` ([`spectral_embedding`][spectral_embedding]), normalises the embedding
    (``embedding_norm``) and assigns labels (``assign_labels``). ``W`` is used as given,
    diagonal included; ``EigshSpectralClustering(kernel="precomputed")`` drops the
    diagonal first (no self-loops, like every kernel).

    Parameters
    ----------
    affinity : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric non-negative affinity.
    n_clusters : int, default=8
        Number of clusters.
    n_components : int, optional
        Number of eigenvectors (``n_clusters`` when None).
    eigen_solver : {"arpack", "lobpcg", "amg"}, default="arpack"
        See [`spectral_embedding`][spectral_embedding].
    eigen_tol : float or "auto", default="auto"
        See [`spectral_embedding`][spectral_embedding].
    assign_labels : {"kmeans", "discretize", "cluster_qr"}, default="kmeans"
        Label assignment in the embedding (see
        [`assign_labels`][spectralnet_seg.cluster.assign_labels]).
    embedding_norm : {"degree", "row", "auto"} or None, default="degree"
        ``"degree"``: rows divided by ``sqrt(d)``, the random-walk eigenvectors (Shi &
        Malik; what scikit-learn's ``SpectralClustering`` clusters); ``"row"``: unit-norm
        rows (Ng, Jordan & Weiss, 2001); ``"auto"``: the one with the lower normalised cut
        ([`cluster_embedding`][cluster_embedding]); None: the raw eigenvectors.
    n_init : int, default=10
        Number of k-means restarts.
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver and the label assignment.
    return_embedding : bool, default=False
        Also return the eigenvalues and eigenvectors.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Cluster labels in ``[0, n_clusters)``.
    eigenvalues : ndarray of shape (n_components,)
        Only when ``return_embedding=True``.
    eigenvectors : ndarray of shape (n_samples, n_components)
        Only when ``return_embedding=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.cluster import spectral_clustering
    >>> W = np.kron(np.eye(2), np.ones((3, 3))) + 0.01
    >>> spectral_clustering(W, n_clusters=2, random_state=0)
    array([0, 0, 0, 1, 1, 1], dtype=int32)
    """
    W = check_affinity(affinity)
    check_n_clusters(n_clusters, W.shape[0])
    rs = check_random_state(random_state)
    values, vectors = spectral_embedding(
        W, n_components or n_clusters, eigen_solver=eigen_solver, eigen_tol=eigen_tol,
        random_state=rs)
    degree = np.asarray(W.sum(axis=1)).ravel()
    labels, _, _ = cluster_embedding(vectors, degree, n_clusters, norm=embedding_norm,
                                     method=assign_labels, n_init=n_init, random_state=rs,
                                     graph=W)
    if return_embedding:
        return labels, values, vectors
    return labels
