"""k-nearest-neighbour affinity (faiss for the full graph, torch ``topk`` inside a minibatch).

The small helpers the feature kernels share live in ``_checks`` (input validation) and
``_graph_ops`` (minibatch kNN, sparse and dense symmetrisation, a CSR matrix from neighbour
lists); the names this module uses are importable from here too, as when they were defined
here.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions

from .._numeric import unit_rows_torch
from ..neighbors import knn_search
from ._base import Kernel
from ._checks import (
    _as_batch,
    _as_float32,
    _check_fitted,
    _check_neighbors_fit,
    _compute_dtype,
    _record_graph_params,
)
from ._graph_ops import (
    _TINY_SCALE,
    _batch_scale_floor,
    _batch_topk,
    _drop_diagonal,
    _neighbor_csr,
    _pair_cosine,
    _pair_distances,
    _pair_distances_torch,
    _symmetrize_dense,
    _symmetrize_sparse,
    _unit_magnitude,
)
from ._registry import register_kernel

# knn_search options each index uses; any other one would be silently ignored.
_INDEX_PARAMS = {
    "flat": {"batch_size", "max_memory_bytes", "n_threads"},
    "hnsw": {"batch_size", "max_memory_bytes", "n_threads", "hnsw_m", "ef_search"},
    "ivf": {"batch_size", "max_memory_bytes", "n_threads", "n_lists", "n_probe",
            "random_state"},
}
_KNN_SEARCH_PARAMS = set().union(*_INDEX_PARAMS.values())


def _check_index_params(index_params: dict | None, index: str) -> dict:
    """``index_params`` as a dict, refusing keys unknown or unused by ``index``."""
    params = dict(index_params or {})
    unknown = set(params) - _KNN_SEARCH_PARAMS
    if unknown:
        raise ValueError(f"unknown index_params {sorted(unknown)}; allowed: "
                         f"{sorted(_KNN_SEARCH_PARAMS)}.")
    unused = set(params) - _INDEX_PARAMS[index]
    if unused:
        users = sorted({name for name, keys in _INDEX_PARAMS.items() if unused & keys})
        raise ValueError(f"index_params {sorted(unused)} have no effect with index={index!r} "
                         f"(they apply to index={' or '.join(map(repr, users))}); remove them "
                         "or change the index.")
    return params


# ----------------------------------------------------------------------------- the kernel
@register_kernel("knn")
class KNNKernel(Kernel):
    """k-nearest-neighbour graph, binary or weighted.

    The defaults give scikit-learn's ``kneighbors_graph(X, 10, include_self=False)``,
    symmetrised: each point linked to its 10 Euclidean nearest neighbours (itself excluded)
    with weight 1, then ``(W + Wᵀ) / 2``. That graph makes no assumption about the feature
    space beyond distances, and works on low-dimensional geometric data (two moons, circles)
    where a cosine graph sees only angles. The paper's feature graph on ViT tokens is
    ``KNNKernel(256, metric="cosine", weighting="cosine")`` (see
    [`paper_kernel`][spectralnet_seg.kernels.paper_kernel]).

    Each point is joined to its ``n_neighbors`` nearest other points (faiss for the full graph,
    exact ``topk`` inside a minibatch); edges are weighted, then the directed graph is
    symmetrised. There are no self-loops: scikit-learn's
    ``SpectralClustering(affinity="nearest_neighbors")`` builds almost the same graph, but
    counts each point as one of its own 10 neighbours and keeps that self-loop (its
    ``affinity_matrix_`` equals ``KNNKernel(9).graph(X) + I``). ``X`` is converted to
    float32, and the search finds the neighbours of those values whatever their common offset
    (it centres them first, see [`knn_search`][spectralnet_seg.neighbors.knn_search]). The
    conversion itself rounds a value ``v`` to a multiple of ``|v| 2^-24``: data whose offset
    is some 10⁴ times their spread or more (projected map coordinates) lose detail, which a
    ``DataConversionWarning`` reports; centre them (``X - X.mean(axis=0)``) before fitting.
    Exact duplicates among the rows can lower the recall of ``index="hnsw"`` on the other
    points; the exact and IVF indices are not affected.

    Parameters
    ----------
    n_neighbors : int, default=10
        Neighbours per point (the paper uses 256 for minibatches of patch tokens).
    metric : {"l2", "cosine"}, default="l2"
        Distance used to find neighbours: Euclidean (``"l2"``) or ``1 - cos`` (``"cosine"``).
    weighting : {"binary", "cosine", "gaussian"}, default="binary"
        Edge weight: 1, ``max(cos(x_i, x_j), 0)`` (the paper: negatives clamped to 0), or the
        self-tuning Gaussian ``exp(-d_ij^2 / (sigma_i sigma_j))`` of the metric's distance,
        with ``sigma_i`` the distance of ``x_i`` to its ``local_scale_neighbor``-th neighbour.
    symmetrize : {"mean", "max", "mutual"}, default="mean"
        ``(W + W^T) / 2`` (the paper; one-sided edges keep half weight), ``max(W, W^T)``
        (union) or ``min(W, W^T)`` (mutual neighbours only).
    local_scale_neighbor : int, default=7
        Which neighbour sets the local scale of the Gaussian weighting (Zelnik-Manor & Perona
        use the 7th). Unused by the other weightings.
    index : {"flat", "hnsw", "ivf"}, default="flat"
        faiss index of [`graph`][graph] and [`cross`][cross] (see
        [`knn_search`][spectralnet_seg.neighbors.knn_search]); approximate indexes scale to
        millions.
    index_params : dict, optional
        More [`knn_search`][spectralnet_seg.neighbors.knn_search] options: ``batch_size``,
        ``max_memory_bytes`` and ``n_threads`` for every index, ``hnsw_m`` and ``ef_search``
        for ``"hnsw"``, ``n_lists``, ``n_probe`` and ``random_state`` for ``"ivf"`` (left
        out, an estimator fitting with this kernel passes its own ``random_state``). An
        option the chosen index does not use is an error, not silently ignored.
    device : str, default="auto"
        Device of the faiss search (GPU index when faiss has GPU support). [`batch`][batch] runs
        on the device of its input.
    verbose : bool, default=False
        Memory estimate and progress bar of the faiss search.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples_fit, n_features), float32
        Points of the last [`graph`][graph] call (the database of [`cross`][cross]).
    n_features_in_ : int
        Number of features.
    local_scale_ : ndarray of shape (n_samples_fit,)
        ``sigma_i`` of the fitted points (only with ``weighting="gaussian"``).

    Notes
    -----
    [`batch`][batch] over a whole data set equals [`graph`][graph] (both are exact with
    ``index="flat"``), up to the choice among exactly tied neighbours (identical rows, e.g.
    the tokens of a flat image region), which faiss and ``torch.topk`` break differently.
    Inside a minibatch the neighbours are those *in the batch*, so the batch graph is the
    kNN graph of the sample, not a sub-block of the full graph.
    [`cross`][cross] does not exclude exact matches: a training point passed to ``cross`` finds
    itself as its first neighbour.

    References
    ----------
    Zelnik-Manor & Perona, "Self-Tuning Spectral Clustering", NIPS 2004.
    Deng & Luo, "Learning Neural Eigenfunctions for Unsupervised Semantic Segmentation",
    ICCV 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.kernels import KNNKernel
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> W = KNNKernel(n_neighbors=5, weighting="binary").graph(X)
    >>> W.shape, bool(abs(W - W.T).max() == 0), float(W.diagonal().max())
    ((50, 50), True, 0.0)
    """

    neighbor_params = ("n_neighbors", "local_scale_neighbor")
    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions({"cosine", "l2"})],
        "weighting": [StrOptions({"binary", "cosine", "gaussian"})],
        "symmetrize": [StrOptions({"mean", "max", "mutual"})],
        "local_scale_neighbor": [Interval(Integral, 1, None, closed="left")],
        "index": [StrOptions({"flat", "hnsw", "ivf"})],
        "index_params": [dict, None],
        "device": "no_validation",  # str or torch.device, resolved by knn_search
        "verbose": ["verbose"],
    }

    def __init__(self, n_neighbors: int = 10, *, metric: str = "l2",
                 weighting: str = "binary", symmetrize: str = "mean",
                 local_scale_neighbor: int = 7, index: str = "flat",
                 index_params: dict | None = None, device: str = "auto",
                 verbose: bool = False):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weighting = weighting
        self.symmetrize = symmetrize
        self.local_scale_neighbor = local_scale_neighbor
        self.index = index
        self.index_params = index_params
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _n_search(self) -> int:
        """Neighbours to search: the Gaussian scale may need more than ``n_neighbors``."""
        if self.weighting == "gaussian":
            return max(self.n_neighbors, self.local_scale_neighbor)
        return self.n_neighbors

    def _search(self, X, Y=None):
        params = _check_index_params(self.index_params, self.index)
        return knn_search(X, Y, n_neighbors=self._n_search(), metric=self.metric,
                          index=self.index, device=self.device, verbose=self.verbose, **params)

    def _weights(self, dist, ind, queries, database, query_scale, database_scale):
        """Edge weights (n_queries, n_neighbors) float64 for the first n_neighbors columns."""
        k = self.n_neighbors
        dist, ind = dist[:, :k].astype(np.float64), ind[:, :k]
        if self.weighting == "binary":
            return np.ones_like(dist)
        if self.weighting == "gaussian":
            scale = query_scale[:, None] * database_scale[ind]
            exact = _pair_distances(queries, database, ind, self.metric)  # duplicates: 0
            return np.exp(-(exact**2) / scale)
        if self.metric == "cosine":
            return np.clip(1.0 - dist, 0.0, None)
        return np.clip(_pair_cosine(queries, database, ind), 0.0, None)

    # ------------------------------------------------------------------ capabilities
    def graph_cost(self, n_samples: int, n_features: int) -> float:
        """Exact search: all pairs; HNSW / IVF: about n log n distance evaluations."""
        if self.index == "flat":
            return 2.0 * float(n_samples) ** 2 * n_features
        return 2.0 * n_samples * n_features * 64.0 * max(np.log2(max(n_samples, 2)), 1.0)

    def input_geometry(self) -> str:
        """``"cosine"`` for the cosine metric, else ``"euclidean"``."""
        return "cosine" if self.metric == "cosine" else "euclidean"

    # ------------------------------------------------------------------ contract
    def graph(self, X, context: Any = None) -> sp.csr_matrix:
        """Symmetric kNN affinity of the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature vectors (a float32 ``numpy.memmap`` is not copied).
        context : object, optional
            Ignored.

        Returns
        -------
        W : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float64
            Symmetric, non-negative, zero diagonal.
        """
        self._validate_params()
        X = _as_float32(X)
        _check_neighbors_fit(self._n_search(), X.shape[0], "KNNKernel.graph")
        dist, ind = self._search(X)
        scale = None
        if self.weighting == "gaussian":
            scale = np.maximum(dist[:, self.local_scale_neighbor - 1].astype(np.float64),
                               _TINY_SCALE)
            self.local_scale_ = scale
        weights = self._weights(dist, ind, X, X, scale, scale)
        W = _neighbor_csr(weights, ind[:, : self.n_neighbors], X.shape[0])
        self.X_fit_ = X
        _record_graph_params(self)
        self.n_features_in_ = X.shape[1]
        return _drop_diagonal(_symmetrize_sparse(W, self.symmetrize))

    def cross(self, Y, context: Any = None) -> sp.csr_matrix:
        """Weighted kNN of each row of ``Y`` among the fitted points (not symmetrised).

        Parameters
        ----------
        Y : array-like of shape (n_queries, n_features)
            New points.
        context : object, optional
            Ignored.

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit), float64
            ``n_neighbors`` non-negative entries per row (fewer where weights are 0).
        """
        _check_fitted(self, "X_fit_")
        Y = _as_float32(Y, "Y")
        if Y.shape[1] != self.n_features_in_:
            raise ValueError(f"Y has {Y.shape[1]} features but the kernel was fitted on "
                             f"{self.n_features_in_}.")
        dist, ind = self._search(self.X_fit_, Y)
        query_scale = None
        if self.weighting == "gaussian":
            query_scale = np.maximum(dist[:, self.local_scale_neighbor - 1].astype(np.float64),
                                     _TINY_SCALE)
        weights = self._weights(dist, ind, Y, self.X_fit_, query_scale,
                                getattr(self, "local_scale_", None))
        return _neighbor_csr(weights, ind[:, : self.n_neighbors], self.X_fit_.shape[0])

    def batch(self, X_batch, context: Any = None):
        """Dense kNN affinity inside a minibatch, on the batch's device.

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, n_features)
            Minibatch (an array is converted).
        context : object, optional
            Ignored.

        Returns
        -------
        W : torch.Tensor of shape (batch_size, batch_size)
            Symmetric, non-negative, zero diagonal, dtype of ``X_batch`` (float32 if it was
            not floating), no gradient.
        """
        import torch

        # no parameter validation here: batch runs every training step, and the estimator
        # validated the kernel once when it resolved it (resolve_kernel)
        X_batch = _as_batch(X_batch)
        b, k = X_batch.shape[0], self.n_neighbors
        _check_neighbors_fit(self._n_search(), b, "KNNKernel.batch")
        with torch.no_grad():
            # Every weighting here is scale-free: compute at unit magnitude.
            X, _ = _unit_magnitude(X_batch.to(_compute_dtype(X_batch)))
            dist, ind, cos = _batch_topk(X, self._n_search(), self.metric)
            if self.weighting == "binary":
                weights = torch.ones_like(dist[:, :k])
            elif self.weighting == "gaussian":
                scale = dist[:, self.local_scale_neighbor - 1].clamp_min(
                    _batch_scale_floor(dist.dtype))
                exact = _pair_distances_torch(X, ind[:, :k], self.metric)  # duplicates: 0
                weights = torch.exp(-exact**2 / (scale[:, None] * scale[ind[:, :k]]))
            else:
                if cos is None:
                    Xn, zero = unit_rows_torch(X)
                    if bool(zero.any()):
                        raise ValueError("cosine weighting is undefined for all-zero rows; "
                                         "remove them or use weighting='binary' or 'gaussian'.")
                    cos = Xn @ Xn.T
                weights = cos.gather(1, ind[:, :k]).clamp_min(0.0)
            W = torch.zeros((b, b), dtype=X.dtype, device=X.device)
            W.scatter_(1, ind[:, :k], weights)
            W = _symmetrize_dense(W, self.symmetrize)
            W.fill_diagonal_(0.0)
        return W.to(X_batch.dtype)
