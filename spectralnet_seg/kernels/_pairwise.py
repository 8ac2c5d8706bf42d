"""The shared machinery of kernels defined for every pair of points (RBF, cosine).

[`_PairwiseKernel`][_PairwiseKernel] holds it: an affinity is a function of a pairwise
distance (Euclidean for RBF, ``1 - cos`` for cosine), the diagonal is zero everywhere
(``graph``, ``batch``), and the full graph is either dense (small ``n``) or sparsified to each
point's ``sparsify_neighbors`` nearest neighbours found by faiss. Subclasses (in ``rbf``)
supply the weights and the bandwidth.

With ``sparsify_neighbors=None`` and a fixed bandwidth, ``batch(X[idx])`` is exactly the
``idx`` sub-block of ``graph(X)``: minibatch training samples the same operator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._numeric import share_an_offset, unit_rows, unit_rows_torch
from ..neighbors import knn_search
from ._base import Kernel
from ._checks import (
    _as_batch,
    _check_fitted,
    _compute_dtype,
    _finite_float32,
    _record_graph_params,
)
from ._graph_ops import (
    _TINY_SCALE,
    _batch_scale_floor,
    _batch_topk,
    _centred,
    _drop_diagonal,
    _half_square_distances_if_one_direction,
    _neighbor_csr,
    _pair_distances,
    _pair_distances_torch,
    _symmetrize_sparse,
    _unit_magnitude,
)

_BLOCK_BYTES = 64 * 2**20  # float64 rows of the dense graph computed at a time


def _common_offset(B: np.ndarray) -> np.ndarray | None:
    """``B``'s column means (float64) when its rows share an offset
    ([`share_an_offset`][spectralnet_seg._numeric.share_an_offset]), else None.

    Subtracted from both sides of the dense float64 ``|a|^2 + |b|^2 - 2ab``: at an offset
    3e6 times the spread (1000 + 3e-4 noise in 384-D) the uncentred expansion's self-tuned
    weights were 0.011 off, depending on the BLAS's summation order; ordinary rows are not
    shifted and keep their values bit for bit.
    """
    B = B.astype(np.float64)
    mean = B.mean(axis=0)
    variance = float(np.square(B - mean).sum(axis=1).mean())
    return mean if share_an_offset(float(mean @ mean), variance) else None


class _PairwiseKernel(Kernel):
    """Shared ``graph`` / ``cross`` / ``batch`` of kernels that are functions of a distance.

    Subclasses set [`_metric`][_metric] and implement [`_weights`][_weights] (numpy and torch) and
    [`_fit_bandwidth`][_fit_bandwidth].
    """

    _metric = "l2"

    # -------------------------------------------------------------- subclass hooks
    def _n_scale(self) -> int:
        """Neighbour that sets the local scale (0: no local scale)."""
        return 0

    def _scale_free(self) -> bool:
        """Whether the weights ignore the data's scale (cosine, or a self-tuned bandwidth)."""
        return self._metric == "cosine" or self._n_scale() > 0

    def _fit_bandwidth(self, n_features: int) -> None:
        """Record fitted bandwidth attributes (e.g. ``gamma_``)."""

    def _weights(self, dist, row_scale, col_scale, n_features: int):
        """Affinity from distances; numpy or torch arrays, scales broadcast or ``None``."""
        raise NotImplementedError

    # -------------------------------------------------------------- capabilities
    def graph_cost(self, n_samples: int, n_features: int) -> float:
        """All pairs; infinite above ``max_dense_samples`` unless sparsified (graph refuses)."""
        if self.sparsify_neighbors is None and n_samples > self.max_dense_samples:
            return float("inf")
        return 2.0 * float(n_samples) ** 2 * n_features

    def input_geometry(self) -> str:
        return "cosine" if self._metric == "cosine" else "euclidean"

    # -------------------------------------------------------------- helpers
    def _check_size(self, n_rows: int, n_cols: int, what: str) -> None:
        if n_rows * n_cols > self.max_dense_samples**2:
            raise ValueError(
                f"{type(self).__name__}.{what} would form a dense {n_rows} x {n_cols} affinity "
                f"(~{12 * n_rows * n_cols / 2**30:.1f} GiB as CSR), above max_dense_samples="
                f"{self.max_dense_samples}; pass sparsify_neighbors=k to keep each point's k "
                "nearest neighbours (faiss), use KNNKernel, or raise max_dense_samples."
            )

    def _search(self, X, Y, k: int):
        return knn_search(X, Y, n_neighbors=k, metric=self._metric, device=self.device,
                          verbose=self.verbose)

    def _distances_np(self, A: np.ndarray, B: np.ndarray,
                      shift: np.ndarray | None = None) -> np.ndarray:
        A, B = A.astype(np.float64), B.astype(np.float64)
        if shift is not None:  # exact in theory; keeps |a|^2 + |b|^2 - 2ab from cancelling
            A, B = A - shift, B - shift
        if self._metric == "cosine":
            d = np.clip(1.0 - _unit_rows(A) @ _unit_rows(B).T, 0.0, None)
        else:
            sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
            d = np.sqrt(np.clip(sq, 0.0, None))
        if self._n_scale() > 0:
            # Identical rows come out a rounding error apart (7e-7 for 384 features), which
            # a self-tuned bandwidth of a point with many duplicates (itself rounding noise)
            # turned into weights of 0 or 0.5 instead of 1.
            d[_same_rows(A, B)] = 0.0
        return d

    def _dense_csr(self, A, B, row_scale, col_scale, skip_diagonal: bool) -> sp.csr_matrix:
        """Dense affinities between rows of A and B as CSR, built in bounded row blocks."""
        step = max(1, _BLOCK_BYTES // (8 * B.shape[0]))
        shift = None if self._metric == "cosine" else _common_offset(B)
        blocks = []
        for start in range(0, A.shape[0], step):
            stop = min(start + step, A.shape[0])
            rs = None if row_scale is None else row_scale[start:stop, None]
            cs = None if col_scale is None else col_scale[None, :]
            block = self._weights(self._distances_np(A[start:stop], B, shift), rs, cs,
                                 A.shape[1])
            if skip_diagonal:
                rows = np.arange(stop - start)
                block[rows, rows + start] = 0.0
            blocks.append(sp.csr_matrix(block))
        return sp.csr_matrix(sp.vstack(blocks, format="csr"))

    def _sparse_scale(self, dist):
        k = self._n_scale()
        return None if k == 0 else np.maximum(dist[:, k - 1].astype(np.float64), _TINY_SCALE)

    # -------------------------------------------------------------- contract
    def graph(self, X, context: Any = None) -> sp.csr_matrix:
        """Affinity over all rows of ``X`` (dense as CSR, or kNN-sparsified).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature vectors.
        context : object, optional
            Ignored.

        Returns
        -------
        W : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float64
            Symmetric, non-negative, zero diagonal.
        """
        self._validate_params()
        X = _finite_float32(X)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"{type(self).__name__}.graph needs at least 2 samples, got {n}.")
        self._fit_bandwidth(X.shape[1])
        k_sparse = self.sparsify_neighbors or 0
        k_search = max(k_sparse, self._n_scale())
        if k_search >= n:
            raise ValueError(f"{type(self).__name__}.graph needs {k_search} neighbours per point "
                             f"but only {n - 1} exist; lower sparsify_neighbors / "
                             "local_scale_neighbor.")
        if self._metric == "cosine":
            _unit_rows(X)  # clear error on zero rows before any work
        dist = ind = None
        if k_search:
            dist, ind = self._search(X, None, k_search)
        scale = self._sparse_scale(dist)
        if scale is not None:
            self.local_scale_ = scale
        if k_sparse:
            col = None if scale is None else scale[ind[:, :k_sparse]]
            row = None if scale is None else scale[:, None]
            exact = _pair_distances(X, X, ind[:, :k_sparse], self._metric)  # duplicates: 0
            weights = self._weights(exact, row, col, X.shape[1])
            # Entries are kernel values (symmetric up to rounding): the union keeps them as is.
            W = _symmetrize_sparse(_neighbor_csr(weights, ind[:, :k_sparse], n), "max")
        else:
            self._check_size(n, n, "graph")
            W = self._dense_csr(X, X, scale, scale, skip_diagonal=True)
            W = _symmetrize_sparse(W, "mean")  # removes float rounding asymmetry
        self.X_fit_ = X
        _record_graph_params(self)
        self.n_features_in_ = X.shape[1]
        return _drop_diagonal(W)

    def cross(self, Y, context: Any = None) -> sp.csr_matrix:
        """Affinities of new points ``Y`` to the fitted points (dense or kNN-sparsified).

        Exact matches are kept: a training point passed here gets affinity 1 (RBF) to itself,
        and a self-tuned bandwidth counts it among its neighbours, so its own scale is the
        distance to its ``local_scale_neighbor - 1``-th other point, not the
        ``local_scale_neighbor``-th of ``local_scale_`` (e.g. weights up to 0.05 apart on 30
        points): the query is treated as a new point, as any new point is.

        Parameters
        ----------
        Y : array-like of shape (n_queries, n_features)
            New points.
        context : object, optional
            Ignored.

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit), float64
        """
        _check_fitted(self, "X_fit_")
        Y = _finite_float32(Y, name="Y")
        if Y.shape[1] != self.n_features_in_:
            raise ValueError(f"Y has {Y.shape[1]} features but the kernel was fitted on "
                             f"{self.n_features_in_}.")
        n_fit = self.X_fit_.shape[0]
        k_sparse = self.sparsify_neighbors or 0
        k_search = max(k_sparse, self._n_scale())
        dist = ind = None
        if k_search:
            dist, ind = self._search(self.X_fit_, Y, k_search)
        row = self._sparse_scale(dist)
        fit_scale = getattr(self, "local_scale_", None)
        if k_sparse:
            col = None if fit_scale is None else fit_scale[ind[:, :k_sparse]]
            row = None if row is None else row[:, None]
            exact = _pair_distances(Y, self.X_fit_, ind[:, :k_sparse], self._metric)
            weights = self._weights(exact, row, col, Y.shape[1])
            return _neighbor_csr(weights, ind[:, :k_sparse], n_fit)
        self._check_size(Y.shape[0], n_fit, "cross")
        return self._dense_csr(Y, self.X_fit_, row, fit_scale, skip_diagonal=False)

    def batch(self, X_batch, context: Any = None):
        """Dense affinity inside a minibatch (torch, on the batch's device, no gradient).

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, n_features)
            Minibatch (an array is converted).
        context : object, optional
            Ignored.

        Returns
        -------
        W : torch.Tensor of shape (batch_size, batch_size)
            Symmetric, non-negative, zero diagonal, dtype of ``X_batch``.
        """
        import torch

        # no parameter validation here: batch runs every training step, and the estimator
        # validated the kernel once when it resolved it (resolve_kernel)
        X_batch = _as_batch(X_batch)
        b, d = X_batch.shape
        k_sparse = self.sparsify_neighbors or 0
        k_search = max(k_sparse, self._n_scale())
        if k_search >= b:
            raise ValueError(f"{type(self).__name__}.batch needs {k_search} neighbours per point "
                             f"but the batch has {b} points; use a larger batch or lower "
                             "sparsify_neighbors / local_scale_neighbor.")
        with torch.no_grad():
            X = X_batch.to(_compute_dtype(X_batch))
            if self._scale_free():
                X, _ = _unit_magnitude(X)
            scale = None
            if k_search:
                dist, ind, _ = _batch_topk(X, k_search, self._metric)
                if self._n_scale():
                    scale = dist[:, self._n_scale() - 1].clamp_min(
                        _batch_scale_floor(dist.dtype))
            if k_sparse:
                col = None if scale is None else scale[ind[:, :k_sparse]]
                row = None if scale is None else scale[:, None]
                W = torch.zeros((b, b), dtype=X.dtype, device=X.device)
                exact = _pair_distances_torch(X, ind[:, :k_sparse], self._metric)
                W.scatter_(1, ind[:, :k_sparse], self._weights(exact, row, col, d))
                W = torch.maximum(W, W.T)
            else:
                W = self._weights(_torch_distances(X, self._metric,
                                                   duplicates_exact=scale is not None),
                                  None if scale is None else scale[:, None],
                                  None if scale is None else scale[None, :], d)
                W = (W + W.T) * 0.5
            W.fill_diagonal_(0.0)
        return W.to(X_batch.dtype)


def _same_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) bool: which rows of ``A`` equal which rows of ``B``, bit for bit."""
    rows = np.ascontiguousarray(np.vstack([A, B]) + 0.0)  # float64; -0.0 is 0.0
    _, ids = np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))),
                       return_inverse=True)
    ids = ids.ravel()
    return ids[: len(A), None] == ids[None, len(A):]


def _unit_rows(A: np.ndarray) -> np.ndarray:
    unit, zero = unit_rows(A)
    if zero.any():
        raise ValueError("the cosine kernel is undefined for all-zero rows; remove them first.")
    return unit


def _torch_distances(X, metric: str, *, duplicates_exact: bool = False):
    """(b, b) Euclidean or cosine distances inside a batch.

    ``duplicates_exact``: identical rows are exactly 0 apart, as in the full graph (for
    self-tuned bandwidths, which divide distances by local scales that are rounding noise
    themselves at points with many duplicates: float32 left identical rows 0.0078 apart).
    """
    import torch

    same = None
    if duplicates_exact:
        _, row_id = torch.unique(X, dim=0, return_inverse=True)
        same = row_id[:, None] == row_id[None, :]
    if metric == "cosine":
        Xn, zero = unit_rows_torch(X)
        if bool(zero.any()):
            raise ValueError("the cosine kernel is undefined for all-zero rows; remove them "
                             "first.")
        half_d2 = _half_square_distances_if_one_direction(Xn)
        d = (1.0 - Xn @ Xn.T).clamp_min(0.0) if half_d2 is None else half_d2
        return d if same is None else d.masked_fill(same, 0.0)
    X = _centred(X)
    sq = (X * X).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)).clamp_min(0.0)
    return (d2 if same is None else d2.masked_fill(same, 0.0)).sqrt()
