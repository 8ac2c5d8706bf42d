"""The ``Kernel`` contract shared by the eigsh baseline and the neural estimators.

One kernel object gives two views of the same affinity:

* [`Kernel.graph`][Kernel.graph] — the full symmetric sparse affinity over a data set (the eigsh
path);
* [`Kernel.batch`][Kernel.batch] — a dense affinity over a minibatch, as a torch tensor (the neural
path).

and one view for out-of-sample points:

* [`Kernel.cross`][Kernel.cross] — affinities between new points and the points the graph was built
on
  (the Nyström extension of the eigsh baseline).

Kernels are scikit-learn style objects: ``__init__`` stores parameters, ``graph`` is the
"fit" that records what ``cross`` needs (attributes ending in ``_``), and ``clone`` works.

What a kernel needs from its caller is *declared*, in the spirit of scikit-learn's estimator
tags: ``Kernel.__kernel_tags__`` returns [`KernelTags`][KernelTags] (does it need the token
context? is its input an affinity matrix rather than features?), combined kernels compose
their members' tags, and callers read them through [`kernel_tags`][kernel_tags] instead of testing
classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class KernelTags:
    """What a kernel declares about its inputs (see ``Kernel.__kernel_tags__``).

    Attributes
    ----------
    requires_context : bool, default=False
        ``graph``/``batch``/``cross`` need the per-sample ``context`` (e.g. the token
        colours and positions of the pixel graph); the estimators then check and pass it,
        and the ``Segmenter`` builds it from the extracted features.
    input_is_affinity : bool, default=False
        ``X`` is the affinity matrix itself, not feature vectors (``"precomputed"``); the
        eigsh estimator then reads cross-affinities in ``predict`` and the neural
        estimators, whose network needs features, refuse the kernel.
    """

    requires_context: bool = False
    input_is_affinity: bool = False


class Kernel(BaseEstimator, ABC):
    """Abstract affinity over feature vectors.

    Subclasses implement [`graph`][graph], [`batch`][batch] and, where out-of-sample extension
    makes sense, [`cross`][cross]. Affinities are non-negative; ``graph`` returns a symmetric
    matrix.

    Attributes
    ----------
    neighbor_params : tuple of str
        Class attribute: the integer parameters that count neighbours among the points a
        graph or batch is built on (e.g. ``("n_neighbors", "local_scale_neighbor")``).
        They cannot exceed the number of points minus one, and [`cap_neighbors`][cap_neighbors]
        lowers them for small data. A kernel declares them instead of callers guessing
        parameter names; combined kernels cap their members (see ``SumKernel``).
    """

    neighbor_params: ClassVar[tuple[str, ...]] = ()
    # scikit-learn's declarative constraints, checked by ``_validate_params`` in ``graph`` and
    # once per fit by ``resolve_kernel``; none by default (parameters are then unchecked).
    _parameter_constraints: ClassVar[dict] = {}

    def __kernel_tags__(self) -> KernelTags:
        """The kernel's declared capabilities; subclasses override and ``replace`` fields.

        Returns
        -------
        KernelTags
            All ``False`` for a plain feature kernel.
        """
        return KernelTags()

    @property
    def input_is_affinity(self) -> bool:
        """Whether ``X`` is an affinity matrix rather than features (from the tags)."""
        return self.__kernel_tags__().input_is_affinity

    def cap_neighbors(self, n_max: int) -> dict[str, int]:
        """Lower every neighbour count above ``n_max`` to ``n_max``, in place.

        Estimators call it with ``n_samples - 1`` before building a graph, so that a
        kernel configured for large data (e.g. the paper's k = 256) still works on a small
        image.

        Parameters
        ----------
        n_max : int
            Largest neighbour count the data allows (``n_points - 1``), at least 1.

        Returns
        -------
        dict of str to int
            The original value of each parameter that was lowered, by name (members of a
            combined kernel as ``"kernels[i].<name>"``); empty when nothing changed.
        """
        if isinstance(n_max, bool) or not isinstance(n_max, Integral) or n_max < 1:
            raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}")
        params = self.get_params(deep=False)
        too_big = {name: params[name] for name in self.neighbor_params
                   if isinstance(params.get(name), Integral)
                   and not isinstance(params[name], bool) and params[name] > n_max}
        if too_big:
            self.set_params(**dict.fromkeys(too_big, int(n_max)))
        return too_big

    @abstractmethod
    def graph(self, X: np.ndarray, context: Any = None) -> sp.csr_matrix:
        """Affinity over all rows of ``X`` and remember what [`cross`][cross] needs.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Feature vectors (float32, finite).
        context : object, optional
            Per-sample side information some kernels use (e.g. token colour and
            position for [`SpatialColorKernel`][SpatialColorKernel]); ignored by plain feature
            kernels.

        Returns
        -------
        W : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
            Symmetric, non-negative affinity matrix.
        """

    def cross(self, Y: np.ndarray, context: Any = None) -> sp.csr_matrix:
        """Affinities between new points ``Y`` and the points of the last [`graph`][graph] call.

        Parameters
        ----------
        Y : ndarray of shape (n_queries, n_features)
            New feature vectors.
        context : object, optional
            Side information for ``Y`` (see [`graph`][graph]).

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit)
            Non-negative affinities of each new point to the fitted points.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no out-of-sample extension (cross affinities)."
        )

    def graph_cost(self, n_samples: int, n_features: int) -> float:
        """Rough number of floating-point operations of [`graph`][graph] on ``n_samples`` points.

        The neural estimators build the global graph only when this is affordable (their
        ``sampler="auto"``). The default is that of an exact all-pairs search.
        """
        return 2.0 * float(n_samples) ** 2 * n_features

    def input_geometry(self) -> str:
        """``"cosine"`` when the affinity ignores the norm of feature vectors, else ``"euclidean"``.

        The neural estimators standardise their network's inputs in the same geometry.
        """
        return "euclidean"

    @abstractmethod
    def batch(self, X_batch, context: Any = None):
        """Dense affinity within a minibatch, for neural training.

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, n_features)
            A minibatch of feature vectors on any device.
        context : object, optional
            Side information for the batch (see [`graph`][graph]).

        Returns
        -------
        W : torch.Tensor of shape (batch_size, batch_size)
            Symmetric, non-negative affinity, same device and dtype as ``X_batch``,
            computed without gradient tracking.
        """


def inverse_sqrt_degree(degree) -> np.ndarray:
    """``d^{-1/2}`` elementwise, 0 where ``d <= 0`` (isolated points stay isolated).

    Parameters
    ----------
    degree : array-like of shape (n,)
        Degrees (row sums of an affinity).

    Returns
    -------
    ndarray of shape (n,), float64
    """
    degree = np.asarray(degree, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)


def degree_normalize(W: sp.spmatrix, degree=None, *, column_degree=None) -> sp.csr_matrix:
    """Normalisation ``D_r^{-1/2} W D_c^{-1/2}`` of a sparse affinity, the package's one copy.

    Each entry is ``w_ij * (s_i * t_j)`` with ``s = d_r^{-1/2}``, ``t = d_c^{-1/2}``, so a
    symmetric ``W`` with equal row and column degrees gives a bitwise symmetric result (the
    symmetric eigensolvers assume it). Rows and columns of zero degree stay zero.

    Parameters
    ----------
    W : sparse matrix of shape (n_rows, n_columns)
        Non-negative affinity.
    degree : array-like of shape (n_rows,), optional
        Row degrees ``d_r``; the row sums of ``W`` by default.
    column_degree : array-like of shape (n_columns,), optional
        Column degrees ``d_c``; ``degree`` by default (a square affinity). A cross-affinity
        of new points to fitted ones takes the fitted points' degrees here.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_rows, n_columns), float64
        Same sparsity pattern as ``W``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> degree_normalize(sp.csr_matrix(np.array([[0.0, 4.0], [4.0, 0.0]]))).toarray()
    array([[0., 1.],
           [1., 0.]])
    """
    W = sp.csr_matrix(W, dtype=np.float64, copy=True)
    if W.nnz and not (np.isfinite(W.data).all() and W.data.min() >= 0):
        raise ValueError("W must be a finite, non-negative affinity (it has NaN, infinite or "
                         "negative entries).")
    if degree is None:
        degree = np.asarray(W.sum(axis=1)).ravel()
    for name, values, size in (("degree", degree, W.shape[0]),
                               ("column_degree", column_degree, W.shape[1])):
        if values is not None and np.shape(values) != (size,):
            raise ValueError(f"{name} must have shape ({size},) for W of shape {W.shape}, got "
                             f"{np.shape(values)}.")
    row_scale = inverse_sqrt_degree(degree)
    column_scale = row_scale if column_degree is None else inverse_sqrt_degree(column_degree)
    rows = np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
    W.data *= row_scale[rows] * column_scale[W.indices]
    return W


def degree_normalize_dense(W):
    """Symmetric normalisation ``D^{-1/2} W D^{-1/2}`` of a dense torch affinity.

    Parameters
    ----------
    W : torch.Tensor or ndarray of shape (b, b)
        Non-negative affinity (an array is converted to a tensor).

    Returns
    -------
    torch.Tensor of shape (b, b)
    """
    import torch

    if not isinstance(W, torch.Tensor):
        W = torch.as_tensor(np.asarray(W))
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (b, b) affinity, got shape {tuple(W.shape)}.")
    degree = W.sum(dim=1)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
    return inv_sqrt[:, None] * W * inv_sqrt[None, :]
