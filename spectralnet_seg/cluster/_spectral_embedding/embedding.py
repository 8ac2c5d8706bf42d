"""The spectral embedding: top eigenpairs of the normalised affinity, and Rayleigh–Ritz.

[`spectral_embedding`][spectral_embedding] computes the top-K eigenvectors of
``M = D^{-1/2} W D^{-1/2}`` with the solver it is asked for (the solver backends live in
``_eigensolvers``); [`rayleigh_ritz`][rayleigh_ritz] finds the best approximations of those
eigenpairs within the span of given functions (e.g. a network's outputs).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._eigensolvers import (
    ARPACK_MODES,
    EIGEN_SOLVERS,
    ComponentIndicators,
    arpack_mode_for,
    require_pyamg,
    solve_arpack,
    solve_dense,
    solve_lobpcg,
)
from .affinity import (
    _check_has_edges,
    _components_and_warn,
    check_affinity,
    normalized_affinity,
)

__all__ = ["rayleigh_ritz", "spectral_embedding"]

# Below this many nodes a dense eigendecomposition is both faster and always converges;
# iterative solvers also misbehave on tiny problems (LOBPCG needs n >> K).
_DENSE_MAX_NODES = 200

# Loosest tolerance "auto" gives the AMG-preconditioned LOBPCG (see spectral_embedding).
_AMG_MAX_TOL = 1e-3

# Eigenvalues of M beyond this magnitude count as non-zero (M's spectrum lies in [-1, 1]).
_NONZERO_EIGENVALUE = 1e-8


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
    ValueError
        If ``W`` is not square, symmetric (relative to its largest weight), finite and
        non-negative.
    EigenSolverConvergenceError
        If the iterative solver does not converge; the message names the knobs to turn.
    ImportError
        If ``eigen_solver="amg"`` and pyamg is not installed.
    """
    # A directed graph's M is not symmetric: the solvers read one triangle (or assume
    # symmetry) and return eigenvalues above 1 without an error.
    M, degree = normalized_affinity(check_affinity(W, name="W"))
    n = M.shape[0]
    k = int(n_components)
    if not 1 <= k <= n:
        raise ValueError(f"n_components={k} must be between 1 and n_samples={n}.")
    _check_has_edges(degree)
    if eigen_solver == "amg":
        require_pyamg()  # fail the same way whatever the graph size
    components = _components_and_warn(M, warn=check_connectivity)
    rng = check_random_state(random_state)

    if n < _DENSE_MAX_NODES or n <= 5 * (k + 1):
        values, vectors = solve_dense(M, k)
    elif eigen_solver == "arpack":
        tol = 0.0 if eigen_tol == "auto" else float(eigen_tol)
        mode = arpack_mode_for(M) if arpack_mode == "auto" else arpack_mode
        values, vectors = solve_arpack(M, k, tol, max_iter, rng, mode=mode,
                                       indicators=ComponentIndicators(components, degree))
    else:
        tol = None if eigen_tol == "auto" else float(eigen_tol)
        if eigen_tol == "auto" and eigen_solver == "amg":
            tol = min(n * np.sqrt(np.finfo(np.float64).eps), _AMG_MAX_TOL)
        values, vectors = solve_lobpcg(M, degree, k, tol, max_iter, rng,
                                       preconditioner=eigen_solver, solver=eigen_solver)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    # An isolated node's row of M is 0, so every eigenvector of a non-zero eigenvalue is 0
    # there; the solvers leave rounding noise (1e-18 to 1e-7), which a row-normalised
    # embedding blew up into unit vectors pointing anywhere (identical isolated nodes got
    # different labels).
    isolated = degree <= 0
    if isolated.any():
        vectors[np.ix_(isolated, np.abs(values) > _NONZERO_EIGENVALUE)] = 0.0
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
        approximate the eigenvalues of ``D^{-1/2} W D^{-1/2}`` from below. When the basis
        spans fewer than K directions under the degree measure, each missing one has value
        0 and a zero column in ``rotation``.
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
    # Dropped directions (value 0, zero column) go where 0 belongs, after positive Ritz
    # values and before negative ones, so that the values stay decreasing.
    ranked = np.argsort(-values, kind="stable")
    return values[ranked], rotation[:, ranked]
