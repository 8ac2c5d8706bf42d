"""A user-supplied affinity matrix, validated and used as is."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array

from .._utils import user_stacklevel
from ._base import Kernel, KernelTags
from ._checks import _check_fitted
from ._graph_ops import _drop_diagonal
from ._registry import register_kernel

# Relative asymmetry (to the largest entry) tolerated before symmetrising with a warning.
_SYMMETRY_RTOL = 1e-6
# Affinities peaking beyond 2**±500 are rescaled by a power of two (see _scale_exponent).
_EXTREME_EXPONENT = 500


def _as_affinity(W, name: str, *, square: bool) -> sp.csr_matrix:
    """Validate an affinity (dense, sparse or torch) as a finite, non-negative float64 CSR."""
    if hasattr(W, "detach") and hasattr(W, "cpu"):
        W = _torch_to_numpy_or_scipy(W)
    W = check_array(W, accept_sparse=("csr", "csc", "coo"), dtype=np.float64,
                    ensure_all_finite=True, input_name=name, ensure_min_samples=1)
    W = sp.csr_matrix(W)
    if square and W.shape[0] != W.shape[1]:
        raise ValueError(f"{name} must be a square (n_samples, n_samples) affinity matrix, got "
                         f"shape {W.shape}.")
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"{name} has negative entries (min {W.data.min():.3g}); affinities must "
                         "be non-negative (e.g. clip them, or use exp(-distance)).")
    W.eliminate_zeros()
    return W


def _torch_to_numpy_or_scipy(W):
    """A torch affinity on the host: sparse layouts as scipy COO (``.numpy()`` refuses
    them, "can't convert Sparse layout tensor"), dense ones as a numpy array."""
    import torch

    W = W.detach().cpu()
    if W.layout == torch.strided:
        return W.numpy()
    W = W.to_sparse_coo().coalesce()
    rows, cols = W.indices().numpy()
    return sp.coo_matrix((W.values().numpy(), (rows, cols)), shape=tuple(W.shape))


def _scale_exponent(peak: float) -> int:
    """``e`` such that dividing by ``2**e`` brings an affinity peaking at ``peak`` near 1,
    or 0 for ordinary magnitudes (which are left bit for bit as they are).

    Spectral clustering does not depend on a global scale of the affinity, but float64 does:
    entries near 1e308 overflow in the degrees and in ``W + W^T``, subnormal ones (1e-310)
    fall under the degree floor. Powers of two rescale exactly.
    """
    exponent = int(np.frexp(peak)[1]) if peak > 0 else 0
    return exponent if abs(exponent) > _EXTREME_EXPONENT else 0


def _is_asymmetric(diff_max: float, scale: float) -> bool:
    return diff_max > _SYMMETRY_RTOL * max(scale, np.finfo(np.float64).tiny)


@register_kernel("precomputed")
class PrecomputedKernel(Kernel):
    """The affinity matrix itself, given in place of features.

    ``graph(W)`` takes the ``(n, n)`` affinity (dense or sparse), ``cross(C)`` the
    ``(n_queries, n)`` affinities of new points to the fitted ones and ``batch(W_b)`` the dense
    ``(b, b)`` block of the affinity for a minibatch. Inputs must be finite and non-negative;
    a non-symmetric square input is replaced by ``(W + W^T) / 2`` with a warning, and the
    diagonal is dropped (no self-loops, as for every kernel). An affinity whose largest
    entry is beyond ``2**±500`` (e.g. 1e308, where degrees overflow, or subnormal values)
    is divided by a power of two that brings it near 1, and so are the cross-affinities:
    the clustering does not depend on a global scale, and ordinary magnitudes are left
    exactly as they are.

    Attributes
    ----------
    n_samples_fit_ : int
        Points of the fitted affinity.
    scale_exponent_ : int
        ``e`` of the ``2**e`` the affinities are divided by (0 for ordinary magnitudes).

    Notes
    -----
    Because its inputs are affinities, not features, the neural estimators (whose network
    consumes features) cannot train on this kernel; they refuse it with a clear error. The
    kernel declares ``input_is_affinity`` in its tags (see
    [`kernel_tags`][spectralnet_seg.kernels.kernel_tags]) so that callers can tell.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.kernels import PrecomputedKernel
    >>> W = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]])
    >>> PrecomputedKernel().graph(W).toarray()
    array([[0. , 0.5, 0. ],
           [0.5, 0. , 0.2],
           [0. , 0.2, 0. ]])
    """

    _parameter_constraints: dict = {}

    def __init__(self):
        pass

    def __kernel_tags__(self) -> KernelTags:
        """``X`` is the affinity matrix itself."""
        return replace(super().__kernel_tags__(), input_is_affinity=True)

    def graph(self, X, context: Any = None) -> sp.csr_matrix:
        """Validate and return the affinity ``X`` (here the matrix itself).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_samples)
            Affinity matrix.
        context : object, optional
            Ignored.

        Returns
        -------
        W : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float64
            Symmetric, non-negative, zero diagonal.
        """
        W = _as_affinity(X, "the precomputed affinity", square=True)
        self.scale_exponent_ = _scale_exponent(W.data.max() if W.nnz else 0.0)
        if self.scale_exponent_:
            W.data = np.ldexp(W.data, -self.scale_exponent_)
        diff = abs(W - W.T)
        if diff.nnz and _is_asymmetric(diff.max(), W.data.max()):
            warnings.warn(f"the precomputed affinity is not symmetric (max |W - W^T| = "
                          f"{diff.max():.3g}); using (W + W^T) / 2.", UserWarning,
                          stacklevel=user_stacklevel())
        W = (W + W.T) * 0.5  # also removes rounding-level asymmetry
        W = _drop_diagonal(W)
        W.eliminate_zeros()
        W.sort_indices()
        self.n_samples_fit_ = W.shape[0]
        self.n_features_in_ = W.shape[0]
        return W

    def cross(self, Y, context: Any = None) -> sp.csr_matrix:
        """Validate the affinities of new points to the fitted points.

        Parameters
        ----------
        Y : {array-like, sparse matrix} of shape (n_queries, n_samples_fit)
            Cross-affinity matrix.
        context : object, optional
            Ignored.

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit), float64
        """
        _check_fitted(self, "n_samples_fit_")
        C = _as_affinity(Y, "the precomputed cross-affinity", square=False)
        if C.shape[1] != self.n_samples_fit_:
            raise ValueError(f"the cross-affinity has {C.shape[1]} columns but the kernel was "
                             f"fitted on {self.n_samples_fit_} points; pass shape "
                             f"(n_queries, {self.n_samples_fit_}).")
        exponent = getattr(self, "scale_exponent_", 0)  # the graph's own rescaling
        if exponent:
            C.data = np.ldexp(C.data, -exponent)
        return C

    def batch(self, X_batch, context: Any = None):
        """Validate a dense ``(b, b)`` affinity block and zero its diagonal.

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, batch_size)
            The affinity among the minibatch's points (an array is converted).
        context : object, optional
            Ignored.

        Returns
        -------
        W : torch.Tensor of shape (batch_size, batch_size)
            Symmetric, non-negative, zero diagonal, no gradient.
        """
        import torch

        if sp.issparse(X_batch):  # np.asarray made a 0-d object array of it
            X_batch = X_batch.toarray()
        W = X_batch if isinstance(X_batch, torch.Tensor) else torch.as_tensor(np.asarray(X_batch))
        if W.layout != torch.strided:  # a (b, b) block is small: compute on it densely
            W = W.to_dense()
        if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
            raise ValueError("the precomputed batch affinity must be a non-empty square "
                             f"(batch_size, batch_size) matrix, got shape {tuple(W.shape)}.")
        if not torch.is_floating_point(W):
            W = W.float()
        with torch.no_grad():
            if not bool(torch.isfinite(W).all()):
                raise ValueError("the precomputed batch affinity contains NaN or infinity.")
            if bool((W < 0).any()):
                raise ValueError("the precomputed batch affinity has negative entries; "
                                 "affinities must be non-negative.")
            diff = float((W - W.T).abs().max())
            if _is_asymmetric(diff, float(W.max())):
                warnings.warn(f"the precomputed batch affinity is not symmetric (max |W - W^T| = "
                              f"{diff:.3g}); using (W + W^T) / 2.", UserWarning,
                              stacklevel=user_stacklevel())
            W = W * 0.5 + W.T * 0.5  # (W + W^T) overflows float32 near its maximum
            W.fill_diagonal_(0.0)
        return W
