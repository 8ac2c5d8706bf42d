"""Reading the input: shape and dtype checks, and chunked float32 rows of arrays or memmaps.

Data are never converted whole: a ``numpy.memmap`` stays on disk and is read (and checked
for NaN / inf and, with the cosine metric, zero rows) in chunks of bounded size. The L2
metric divides data of extreme magnitude by an exact power of two so that faiss's float32
squares neither overflow nor vanish.
"""

from __future__ import annotations

import numpy as np

from .._numeric import power_of_two_exponent, unit_rows
from .._utils import check_finite_rows

# Rows converted at a time when validating / adding the database (bounds the float32 copies).
_CHUNK_BYTES = 64 * 2**20


def _as_2d(X, name: str) -> np.ndarray:
    """Shape/dtype checks without copying (memory-mapped input stays on disk)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        raise TypeError(f"{name} is a sparse matrix; knn_search needs a dense array "
                        f"(call {name}.toarray() if it fits in memory).")
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor, possibly on a GPU
        X = X.detach().cpu().numpy()
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features), got "
                         f"shape {X.shape}; reshape 1-D data with .reshape(-1, 1).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); at least one sample and one "
                         "feature are required.")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    return X


def _chunk_rows(X: np.ndarray) -> int:
    return max(1, _CHUNK_BYTES // (4 * X.shape[1]))


def _rows_f32(X: np.ndarray, start: int, stop: int, metric: str, name: str,
              offset: int = 0, exponent: int = 0) -> np.ndarray:
    """Rows ``start:stop`` as C-contiguous float32: unit-normalised for the cosine metric,
    divided by ``2**exponent`` (exact, see [`_l2_exponent`][_l2_exponent]) for the L2 metric."""
    rows = np.ascontiguousarray(X[start:stop], dtype=np.float32)
    if metric == "cosine":
        rows, zero = unit_rows(rows)
        if zero.any():
            bad = offset + start + int(np.flatnonzero(zero)[0])
            raise ValueError(f"{name} row {bad} is all zeros; the cosine metric is undefined for "
                             "zero vectors (remove them or use metric='l2').")
    elif exponent:
        rows = np.ldexp(rows, -exponent)
    return rows


def _check_rows(X: np.ndarray, metric: str, name: str) -> float:
    """One streaming pass: finite after float32 conversion, no zero rows for cosine.

    Returns the largest absolute value (what [`_l2_exponent`][_l2_exponent] needs).
    """
    step = _chunk_rows(X)
    max_abs = 0.0
    for start in range(0, X.shape[0], step):
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            rows = np.asarray(X[start:start + step], dtype=np.float32)
        check_finite_rows(rows, offset=start, name=name, note=" (after conversion to float32)")
        if metric == "cosine":
            _rows_f32(rows, 0, rows.shape[0], metric, name, offset=start)
        else:
            max_abs = max(max_abs, float(rows.max()), -float(rows.min()))  # no copy
    return max_abs


def _l2_exponent(max_abs: float, n_features: int) -> int:
    """``e`` such that the L2 search divides the data by ``2**e`` (0 for ordinary magnitudes).

    faiss squares float32 values: beyond ~1e19 the squares overflow (neighbours come back
    as id -1) and below ~1e-19 they vanish (every distance 0). Scaling by a power of two is
    exact, so the neighbours are those of the original data at any scale, as long as the
    distances themselves fit in float32.
    """
    largest_distance = 2.0 * max_abs * np.sqrt(n_features)
    if largest_distance >= np.finfo(np.float32).max:
        raise ValueError(
            f"X's values are too large for float32 distances (largest magnitude {max_abs:.3g}, "
            f"so distances up to ~{largest_distance:.3g}, above float32's "
            f"{float(np.finfo(np.float32).max):.3g}); divide X by a constant first (the kNN "
            "graph does not change) or use metric='cosine'.")
    return power_of_two_exponent(max_abs)
