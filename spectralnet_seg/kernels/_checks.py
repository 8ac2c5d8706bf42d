"""Input and state checks the feature kernels share.

Full-graph input as float32 without copying float32 memmaps, a minibatch as a finite
floating torch tensor (and the dtype its distances are computed in), the "call ``graph``
first" check of ``cross``, and enough points for the neighbours asked; a warning when the
float32 conversion rounds wide data's values to a visible fraction of their spread.
"""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError

from .._numeric import Float32Rounding
from .._utils import check_float32_rows
from ..data._feature_source import chunk_rows
from ..neighbors import _as_2d


def _as_float32(X, name: str = "X") -> np.ndarray:
    """2-D float32 C-contiguous array; float32 memmaps pass through without a copy.

    Finiteness is checked by [`knn_search`][spectralnet_seg.neighbors.knn_search] (in chunks).
    """
    X = _as_2d(X, name)
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        with np.errstate(over="ignore"):  # overflow is reported below, in words
            X32 = np.ascontiguousarray(X, dtype=np.float32)
        _refuse_float32_overflow(X, X32, name)
        _warn_if_float32_rounds_the_spread(X, X32, name)
        return X32
    return X


def _refuse_float32_overflow(X: np.ndarray, X32: np.ndarray, name: str) -> None:
    """Finite values beyond float32's range became inf: say so, instead of "contains NaN or
    infinity" about data that hold none (and a rounding warning of "inf %")."""
    if X.dtype.kind != "f" or X.dtype.itemsize <= 4:
        return  # float16/32 values fit, and so do integers (int64 < 1e19)
    step = chunk_rows(X.shape[1])
    for start in range(0, X.shape[0], step):
        check_float32_rows(X[start:start + step], X32[start:start + step], offset=start,
                           name=name, precision_of="the kernels")


def _finite_float32(X, name: str = "X") -> np.ndarray:
    """[`check_finite_2d`][spectralnet_seg._utils.check_finite_2d] (2-D, finite, float32),
    with the warning of [`_as_float32`][_as_float32] when float32 rounds wider data away."""
    from .._utils import check_finite_2d

    X32 = check_finite_2d(X, name=name)
    if not (isinstance(X, np.ndarray) and X.dtype == np.float32):
        wide = np.asarray(X) if isinstance(X, np.ndarray) else np.asarray(X, dtype=np.float64)
        _warn_if_float32_rounds_the_spread(wide, X32, name)
    return X32


def _warn_if_float32_rounds_the_spread(X: np.ndarray, X32: np.ndarray, name: str) -> None:
    """[`Float32Rounding`][spectralnet_seg._numeric.Float32Rounding] of ``X`` converted to
    ``X32``, measured in chunks, and its warning; nothing to measure when ``X`` had no more
    precision than float32 (float16/32, bool)."""
    if X.dtype.itemsize <= 4 and X.dtype.kind not in "iu":
        return
    n, d = X.shape
    step = chunk_rows(d)
    rounding = Float32Rounding(d)
    for start in range(0, n, step):
        rounding.add(X[start:start + step], X32[start:start + step])
    rounding.warn(name)


def _as_batch(X_batch, name: str = "X_batch"):
    """Validate a minibatch as a 2-D, non-empty, finite floating torch tensor."""
    import torch

    if not isinstance(X_batch, torch.Tensor):
        X_batch = torch.as_tensor(np.asarray(X_batch))
    if X_batch.ndim != 2 or X_batch.shape[0] == 0 or X_batch.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor of shape (batch_size, "
                         f"n_features), got shape {tuple(X_batch.shape)}.")
    if not torch.is_floating_point(X_batch):
        X_batch = X_batch.float()
    if not bool(torch.isfinite(X_batch).all()):
        raise ValueError(f"{name} contains NaN or infinity.")
    return X_batch


def _compute_dtype(X_batch):
    """Half precision is not accurate enough for distances: compute in float32 at least."""
    import torch

    return torch.float64 if X_batch.dtype == torch.float64 else torch.float32


# Parameters that do not change the values of cross: where it runs, what it prints, the
# size limit of dense results, and how graph symmetrises (cross is not symmetrised).
_RUNTIME_PARAMS = ("device", "verbose", "max_dense_samples", "symmetrize")


def _graph_params(kernel) -> dict:
    return {name: value for name, value in kernel.get_params(deep=False).items()
            if name not in _RUNTIME_PARAMS}


def _record_graph_params(kernel) -> None:
    """Remember the parameters ``graph`` fitted with (see [`_check_fitted`][_check_fitted])."""
    kernel._fitted_params = _graph_params(kernel)


def _check_fitted(kernel, attribute: str) -> None:
    """Kernels have no ``fit`` (sklearn's check_is_fitted needs one): ``graph`` fits them.

    ``cross`` combines the fitted state (``gamma_``, local scales) with the parameters: after
    ``set_params`` it mixed a fitted gamma or scale neighbour with new ones, without a word.
    """
    if not hasattr(kernel, attribute):
        raise NotFittedError(f"this {type(kernel).__name__} has no fitted points yet; call "
                             "graph(X) before cross(Y).")
    fitted = getattr(kernel, "_fitted_params", None)
    if fitted is not None:
        changed = sorted(name for name, value in _graph_params(kernel).items()
                         if name in fitted and not _same(fitted[name], value))
        if changed:
            raise ValueError(f"{type(kernel).__name__} parameters {changed} changed since "
                             "graph(X) fitted it; call graph(X) again before cross(Y).")


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays: compare by identity
        return a is b


def _check_neighbors_fit(k: int, n: int, what: str) -> None:
    if k >= n:
        raise ValueError(f"{what} needs {k} neighbours per point but there are only {n} points "
                         f"({n - 1} neighbours each); lower n_neighbors / local_scale_neighbor "
                         f"or use more points.")
