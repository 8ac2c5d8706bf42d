"""Dense kernels defined for every pair of points: Gaussian (RBF) and cosine similarity.

Both share one structure (``_PairwiseKernel``, in ``_pairwise``): an affinity is a function of a
pairwise distance (Euclidean for RBF, ``1 - cos`` for cosine), the diagonal is zero everywhere
(``graph``, ``batch``), and the full graph is either dense (small ``n``) or sparsified to each
point's ``sparsify_neighbors`` nearest neighbours found by faiss. The shared names
(``_PairwiseKernel``, ``_BLOCK_BYTES``, ``_unit_rows``, ``_torch_distances``) are importable
from here too, as when they were defined here.

With ``sparsify_neighbors=None`` and a fixed bandwidth, ``batch(X[idx])`` is exactly the
``idx`` sub-block of ``graph(X)``: minibatch training samples the same operator.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._pairwise import _BLOCK_BYTES, _PairwiseKernel, _torch_distances, _unit_rows  # noqa: F401
from ._registry import register_kernel


def _exp(x):
    """exp of a numpy array or a torch tensor (the weights serve both paths)."""
    return np.exp(x) if isinstance(x, np.ndarray) else x.exp()


@register_kernel("rbf")
class RBFKernel(_PairwiseKernel):
    """Gaussian (RBF) affinity, fixed or self-tuning bandwidth.

    ``W_ij = exp(-gamma ||x_i - x_j||^2)`` (``bandwidth="fixed"``) or
    ``W_ij = exp(-||x_i - x_j||^2 / (sigma_i sigma_j))`` (``bandwidth="self-tuning"``, with
    ``sigma_i`` the distance of ``x_i`` to its ``local_scale_neighbor``-th nearest neighbour,
    Zelnik-Manor & Perona). The diagonal is 0 (no self-loops), unlike
    ``sklearn.metrics.pairwise.rbf_kernel``, in ``graph`` and ``batch`` alike.

    Parameters
    ----------
    gamma : float, optional
        Fixed bandwidth; ``None`` means ``1 / n_features`` (as in scikit-learn). Must be
        ``None`` with ``bandwidth="self-tuning"``.
    bandwidth : {"fixed", "self-tuning"}, default="fixed"
        Global ``gamma`` or per-point local scales.
    local_scale_neighbor : int, default=7
        Neighbour that sets ``sigma_i`` (self-tuning only).
    sparsify_neighbors : int, optional
        Keep only each point's ``sparsify_neighbors`` nearest neighbours (faiss; union
        symmetrisation) in ``graph``, ``cross`` and ``batch``. Required for large ``n``.
    max_dense_samples : int, default=10000
        Largest ``n`` for which the dense graph (``n^2`` stored entries) is built.
    device : str, default="auto"
        Device of the faiss searches.
    verbose : bool, default=False
        Progress of the faiss searches.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples_fit, n_features)
    n_features_in_ : int
    gamma_ : float
        Bandwidth used (fixed bandwidth only).
    local_scale_ : ndarray of shape (n_samples_fit,)
        ``sigma_i`` (self-tuning only).

    Notes
    -----
    With a fixed bandwidth and no sparsification, ``batch(X[idx])`` equals the ``idx`` block
    of ``graph(X)``. Self-tuning scales and sparsification in ``batch`` use the neighbours
    *inside the batch*, so there the batch affinity is the kernel of the sample.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.kernels import RBFKernel
    >>> W = RBFKernel(gamma=0.5).graph(np.array([[0.0], [1.0], [3.0]]))
    >>> W.toarray().round(3)
    array([[0.   , 0.607, 0.011],
           [0.607, 0.   , 0.135],
           [0.011, 0.135, 0.   ]])
    """

    _metric = "l2"
    neighbor_params = ("local_scale_neighbor", "sparsify_neighbors")
    _parameter_constraints: dict = {
        "gamma": [Interval(Real, 0, None, closed="neither"), None],
        "bandwidth": [StrOptions({"fixed", "self-tuning"})],
        "local_scale_neighbor": [Interval(Integral, 1, None, closed="left")],
        "sparsify_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "max_dense_samples": [Interval(Integral, 2, None, closed="left")],
        "device": "no_validation",
        "verbose": ["verbose"],
    }

    def __init__(self, gamma: float | None = None, *, bandwidth: str = "fixed",
                 local_scale_neighbor: int = 7, sparsify_neighbors: int | None = None,
                 max_dense_samples: int = 10000, device: str = "auto", verbose: bool = False):
        self.gamma = gamma
        self.bandwidth = bandwidth
        self.local_scale_neighbor = local_scale_neighbor
        self.sparsify_neighbors = sparsify_neighbors
        self.max_dense_samples = max_dense_samples
        self.device = device
        self.verbose = verbose

    def _validate_params(self):
        super()._validate_params()
        if self.bandwidth == "self-tuning" and self.gamma is not None:
            raise ValueError("gamma is only used with bandwidth='fixed'; set gamma=None for "
                             "bandwidth='self-tuning'.")

    def _n_scale(self) -> int:
        return self.local_scale_neighbor if self.bandwidth == "self-tuning" else 0

    def _fit_bandwidth(self, n_features: int) -> None:
        if self.bandwidth == "fixed":
            self.gamma_ = float(self.gamma) if self.gamma is not None else 1.0 / n_features

    def _weights(self, dist, row_scale, col_scale, n_features: int):
        if self.bandwidth == "fixed":
            gamma = float(self.gamma) if self.gamma is not None else 1.0 / n_features
            return _exp(-gamma * dist**2)
        return _exp(-(dist**2) / (row_scale * col_scale))


@register_kernel("cosine")
class CosineKernel(_PairwiseKernel):
    """Cosine-similarity affinity, made non-negative by clipping or shifting.

    ``W_ij = max(cos(x_i, x_j), 0)`` (``shift="clip"``, the paper's feature affinity before
    its top-k) or ``(1 + cos(x_i, x_j)) / 2`` (``shift="shift"``). Zero diagonal.

    Parameters
    ----------
    shift : {"clip", "shift"}, default="clip"
        How negative similarities are handled.
    sparsify_neighbors : int, optional
        Keep only each point's ``sparsify_neighbors`` most similar points (faiss).
    max_dense_samples : int, default=10000
        Largest ``n`` for which the dense graph is built.
    device : str, default="auto"
        Device of the faiss searches.
    verbose : bool, default=False
        Progress of the faiss searches.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples_fit, n_features)
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.kernels import CosineKernel
    >>> CosineKernel().graph(np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])).toarray().round(3)
    array([[0.   , 0.707, 0.   ],
           [0.707, 0.   , 0.   ],
           [0.   , 0.   , 0.   ]])
    """

    _metric = "cosine"
    neighbor_params = ("sparsify_neighbors",)
    _parameter_constraints: dict = {
        "shift": [StrOptions({"clip", "shift"})],
        "sparsify_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "max_dense_samples": [Interval(Integral, 2, None, closed="left")],
        "device": "no_validation",
        "verbose": ["verbose"],
    }

    def __init__(self, shift: str = "clip", *, sparsify_neighbors: int | None = None,
                 max_dense_samples: int = 10000, device: str = "auto", verbose: bool = False):
        self.shift = shift
        self.sparsify_neighbors = sparsify_neighbors
        self.max_dense_samples = max_dense_samples
        self.device = device
        self.verbose = verbose

    def _weights(self, dist, row_scale, col_scale, n_features: int):
        cos = 1.0 - dist
        if self.shift == "shift":
            return (1.0 + cos) * 0.5
        return cos.clip(0.0, None) if isinstance(cos, np.ndarray) else cos.clamp_min(0.0)
