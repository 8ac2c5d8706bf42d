"""Eigensolvers for the top eigenpairs of a normalised affinity ``M = D^{-1/2} W D^{-1/2}``.

Private helpers of [`spectral_embedding`][spectralnet_seg.cluster.spectral_embedding]: a dense
solver for
tiny graphs, ARPACK (in normal or shift-invert mode) and LOBPCG, optionally preconditioned by
pyamg's smoothed aggregation. Each returns ``(values, vectors)`` of ``M`` for the ``k``
largest eigenvalues, in any order; the caller sorts, normalises and fixes signs.

*Which ARPACK mode.* The clusters of a graph show in the eigenvalues of ``M`` closest to 1.
On a graph of high intrinsic dimension (a kNN graph of image features, of digits) those are
well separated from the rest, and Lanczos on ``M`` ("normal" mode, ``which="LA"``) converges
in a few restarts. On a pixel grid they are packed within ~1e-5 of each other and of 1, and
normal mode needs thousands of restarts (16x slower than scikit-learn's on the coins image).
Shift-invert mode runs Lanczos on ``(L - σI)^{-1}`` with ``L = I - M`` and a small negative
``σ``, where those eigenvalues become the largest and best separated — at the price of a
sparse LU factorisation of ``L - σI``. That factorisation is cheap exactly on graphs that
are nearly planar (an image grid: O(n log n) fill with a good ordering, Lipton, Rose &
Tarjan 1979) and ruinous on kNN graphs of high-dimensional data (fill near n²), so
``arpack_mode="auto"`` tells the two apart by the mean bandwidth of the graph in reverse
Cuthill–McKee order, which grows like √n on a 2-D grid and much faster on kNN graphs.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh, lobpcg

__all__ = ["ARPACK_MODES", "EIGEN_SOLVERS", "ComponentIndicators", "EigenSolverConvergenceError",
           "arpack_mode_for", "require_pyamg", "solve_arpack", "solve_dense", "solve_lobpcg"]

EIGEN_SOLVERS = ("arpack", "lobpcg", "amg")
ARPACK_MODES = ("auto", "normal", "shift-invert")

# Shift of the Laplacian in shift-invert mode: L has an exact zero eigenvalue (the constant
# vector of a connected graph), so sigma = 0 would factorise a singular matrix; a small
# negative shift keeps L - sigma*I positive definite (scikit-learn uses the same value).
_SHIFT = -1e-5

# A 2-D pixel grid has a mean reverse-Cuthill-McKee bandwidth of ~0.66 sqrt(n) (measured on
# the coins image from 1e3 to 1e5 pixels), a 3-D grid 2.5-3.5 sqrt(n) and kNN graphs of
# digits or image features 5-13 sqrt(n). Shift-invert wins only on the first (a 40^3 grid
# took 32 s in shift-invert against 20 s in normal mode; digits 0.19 s against 0.09 s).
_LATTICE_BANDWIDTH_FACTOR = 2.0


class EigenSolverConvergenceError(RuntimeError):
    """The eigensolver did not reach the requested tolerance."""


def _convergence_message(solver: str, detail: str) -> str:
    return (
        f"eigen_solver={solver!r} did not converge ({detail}). Things to try: a looser "
        "eigen_tol (e.g. 1e-6), fewer n_components, another eigen_solver ('arpack', "
        "'lobpcg', 'amg'), or a better-connected graph (a larger n_neighbors of the kernel)."
    )


# ---------------------------------------------------------------------------- mode choice


def mean_rcm_bandwidth(W: sp.csr_matrix) -> float:
    """Mean distance of each row's first non-zero to the diagonal, in reverse Cuthill–McKee order.

    Parameters
    ----------
    W : scipy.sparse.csr_matrix of shape (n, n)
        Symmetric sparsity pattern (values are ignored).

    Returns
    -------
    float
        ``mean_i (i - min{j : W[p_i, p_j] != 0})`` over the rows, with ``p`` the RCM order
        (rows with no entry left of the diagonal count 0). It bounds the fill of a banded
        factorisation per row, and costs O(nnz).
    """
    n = W.shape[0]
    perm = reverse_cuthill_mckee(sp.csr_matrix(W), symmetric_mode=True)
    P = sp.csr_matrix(W)[perm][:, perm]
    rows = np.repeat(np.arange(n), np.diff(P.indptr))
    first = np.arange(n)
    np.minimum.at(first, rows, P.indices)
    return float((np.arange(n) - first).mean())


def arpack_mode_for(W: sp.csr_matrix) -> str:
    """``"shift-invert"`` for nearly planar graphs (pixel grids), ``"normal"`` otherwise.

    Parameters
    ----------
    W : scipy.sparse.csr_matrix of shape (n, n)
        Symmetric affinity.

    Returns
    -------
    {"normal", "shift-invert"}
        See the module docstring for why the bandwidth decides.
    """
    n = W.shape[0]
    lattice_like = mean_rcm_bandwidth(W) <= _LATTICE_BANDWIDTH_FACTOR * np.sqrt(n)
    return "shift-invert" if lattice_like else "normal"


# ---------------------------------------------------------------------------- solvers


def solve_dense(M: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of a small ``M`` by LAPACK."""
    n = M.shape[0]
    return eigh(M.toarray(), subset_by_index=[n - k, n - 1])


class ComponentIndicators:
    """The exact eigenvectors of eigenvalue 1 of ``M``: one per connected component.

    On component C of positive volume ``vol_C = Σ_{i∈C} d_i``, ``u_C = sqrt(d) 1_C /
    sqrt(vol_C)`` is a unit eigenvector of ``M`` with eigenvalue 1; components of zero
    volume (isolated nodes) have none. They are held as component ids, so that applying the
    projector ``U Uᵀ`` costs O(n) however many components there are.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Connected-component id of each node (``scipy.sparse.csgraph.connected_components``).
    degree : ndarray of shape (n,)
        Degrees ``d = W 1``.

    Attributes
    ----------
    n_indicators : int
        Number of components of positive volume (the multiplicity of eigenvalue 1).
    """

    def __init__(self, labels: np.ndarray, degree: np.ndarray) -> None:
        volume = np.bincount(labels, weights=degree)
        # Components by decreasing volume (ties by id): when there are more of them than
        # eigenvectors asked for, the largest ones are kept.
        order = np.lexsort((np.arange(volume.size), -volume))
        order = order[volume[order] > 0]
        rank = np.full(volume.size, -1)
        rank[order] = np.arange(order.size)
        self.n_indicators = int(order.size)
        self._rank = rank[labels]  # (n,) column of each node's indicator, -1 for none
        self._weight = np.where(self._rank >= 0,
                                np.sqrt(degree / np.maximum(volume[labels], 1e-300)), 0.0)

    def coefficients(self, v: np.ndarray) -> np.ndarray:
        """``Uᵀ v``, shape (n_indicators,)."""
        on = self._rank >= 0
        return np.bincount(self._rank[on], weights=self._weight[on] * v[on],
                           minlength=self.n_indicators)

    def combine(self, c: np.ndarray) -> np.ndarray:
        """``U c``, shape (n,)."""
        return np.where(self._rank >= 0, self._weight * c[np.maximum(self._rank, 0)], 0.0)

    def dense(self, k: int) -> np.ndarray:
        """The first ``k`` indicators as columns, shape (n, k)."""
        U = np.zeros((self._rank.size, k))
        on = (self._rank >= 0) & (self._rank < k)
        U[np.flatnonzero(on), self._rank[on]] = self._weight[on]
        return U


def _deflated(M: sp.csr_matrix, indicators: ComponentIndicators) -> LinearOperator:
    """``M - 2 U Uᵀ``: the eigenvalue-1 eigenvectors moved to -1, below every other one."""
    def matvec(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        return M @ v - 2.0 * indicators.combine(indicators.coefficients(v))

    return LinearOperator(M.shape, matvec=matvec, dtype=np.float64)


def solve_arpack(M: sp.csr_matrix, k: int, tol: float, max_iter: int | None, rng, *,
                 mode: str, indicators: ComponentIndicators | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of ``M`` by ARPACK, in ``"normal"`` or ``"shift-invert"`` mode.

    Parameters
    ----------
    M : scipy.sparse.csr_matrix of shape (n, n)
        Normalised affinity.
    k : int
        Number of eigenpairs.
    tol : float
        ARPACK's relative tolerance (0: machine precision).
    max_iter : int or None
        Cap on ARPACK's restarts.
    rng : numpy.random.RandomState
        Draws the start vector (ARPACK's default one is not seeded).
    mode : {"normal", "shift-invert"}
        Lanczos on ``M`` (largest algebraic), or on ``(L - σI)^{-1}``, ``L = I - M``.
    indicators : ComponentIndicators, optional
        The eigenvectors of eigenvalue 1 of a disconnected graph. Normal mode returns them
        as they are and solves for the rest on the deflated ``M - 2 U Uᵀ``: Lanczos from one
        start vector finds a multiple eigenvalue only once per copy it happens to resolve,
        and on six well-separated blobs it returned 1 five times instead of six, merging two
        blobs and splitting a third (seeds 1-3 of 4). Shift-invert mode ignores them (its
        factorisation separates the copies; 0 misses in 72 such graphs).

    Returns
    -------
    values : ndarray of shape (k,)
    vectors : ndarray of shape (n, k)
    """
    n = M.shape[0]
    v0 = rng.uniform(-1, 1, n)
    try:
        if mode == "shift-invert":
            laplacian = sp.csc_matrix(sp.identity(n, format="csc") - M)
            values, vectors = eigsh(laplacian, k=k, sigma=_SHIFT, which="LM", tol=tol,
                                    v0=v0, maxiter=max_iter)
            return 1.0 - values, vectors
        c = 0 if indicators is None or indicators.n_indicators < 2 else indicators.n_indicators
        if c == 0:
            return eigsh(M, k=k, which="LA", tol=tol, v0=v0, maxiter=max_iter)
        if c >= k:
            return np.ones(k), indicators.dense(k)
        values, vectors = eigsh(_deflated(M, indicators), k=k - c, which="LA", tol=tol, v0=v0,
                                maxiter=max_iter)
        return np.concatenate([np.ones(c), values]), np.hstack([indicators.dense(c), vectors])
    except ArpackNoConvergence as exc:
        detail = f"{len(exc.eigenvalues)} of {k} eigenpairs converged"
        raise EigenSolverConvergenceError(_convergence_message("arpack", detail)) from exc
    except ArpackError as exc:  # pragma: no cover - numerical breakdown inside ARPACK
        raise EigenSolverConvergenceError(_convergence_message("arpack", str(exc))) from exc


def require_pyamg():
    """The pyamg module, or an ImportError that names the extra to install."""
    try:
        import pyamg
    except ImportError as exc:
        raise ImportError(
            "eigen_solver='amg' needs pyamg, which is not installed; install the 'amg' "
            "extra (pip install 'spectralnet-seg[amg]') or use eigen_solver='arpack'."
        ) from exc
    return pyamg


def _amg_preconditioner(L: sp.csr_matrix, rng):
    smoothed_aggregation_solver = require_pyamg().smoothed_aggregation_solver
    # L is singular (constant-like null vector); a tiny shift gives AMG a definite matrix.
    shifted = sp.csr_matrix(L + 1e-5 * sp.identity(L.shape[0], format="csr"))
    # pyamg draws start vectors from numpy's global generator (pyamg issue #139), so the
    # same random_state gave different partitions: seed it from rng for the build only.
    global_state = np.random.get_state()  # noqa: NPY002 - the generator pyamg uses
    np.random.seed(rng.randint(np.iinfo(np.int32).max))  # noqa: NPY002
    try:
        # One forward Gauss-Seidel sweep before and one backward after the coarse
        # correction: a symmetric V-cycle (LOBPCG needs an SPD preconditioner) at half the
        # smoothing work of pyamg's default symmetric sweeps on both sides, with as good a
        # partition (coins at full resolution: fit 5.7 s against 6.0 s, seeds 0-4).
        return smoothed_aggregation_solver(
            shifted, presmoother=("gauss_seidel", {"sweep": "forward"}),
            postsmoother=("gauss_seidel", {"sweep": "backward"})).aspreconditioner()
    finally:
        np.random.set_state(global_state)  # noqa: NPY002


def _lobpcg_start(degree: np.ndarray, k: int, rng) -> np.ndarray:
    # The first column is the exact top eigenvector of a connected graph, sqrt(d).
    X = rng.standard_normal((degree.shape[0], k + 1))
    X[:, 0] = np.sqrt(degree)
    return X


def solve_lobpcg(M: sp.csr_matrix, degree: np.ndarray, k: int, tol: float | None,
                 max_iter: int | None, rng, *, preconditioner: str | None = None,
                 solver: str = "lobpcg") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of ``M`` by LOBPCG on ``L = I - M`` (AMG-preconditioned or not).

    Non-convergence is judged from the residuals ``|M u - λ u|`` of the result, with an
    actionable [`EigenSolverConvergenceError`][EigenSolverConvergenceError].
    """
    n = M.shape[0]
    # Solve for the smallest eigenpairs of L = I - M, as scikit-learn does: LOBPCG and the
    # AMG preconditioner both work on the positive semi-definite Laplacian.
    L = sp.csr_matrix(sp.identity(n, format="csr") - M)
    M_pre = _amg_preconditioner(L, rng) if preconditioner == "amg" else None
    X = _lobpcg_start(degree, k, rng)
    with warnings.catch_warnings():
        # Non-convergence is checked below from the residuals, with an actionable error.
        warnings.simplefilter("ignore", UserWarning)
        lam, vecs = lobpcg(L, X, M=M_pre, tol=tol, largest=False, maxiter=max_iter or 2000)
    order = np.argsort(lam)[:k]
    values, vectors = 1.0 - lam[order], vecs[:, order]
    residual = np.linalg.norm(M @ vectors - vectors * values, axis=0).max()
    limit = max(10 * (tol if tol is not None else n * np.sqrt(np.finfo(float).eps)), 1e-4)
    if not np.isfinite(residual) or residual > limit:
        raise EigenSolverConvergenceError(
            _convergence_message(solver, f"largest residual {residual:.2e} > {limit:.1e}"))
    return values, vectors
