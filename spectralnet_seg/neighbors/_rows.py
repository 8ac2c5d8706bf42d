"""Reading the input: shape and dtype checks, and chunked float32 rows of arrays or memmaps.

Data are never converted whole: a ``numpy.memmap`` stays on disk and is read (and checked
for NaN / inf and, with the cosine metric, zero rows) in chunks of bounded size. For the L2
metric the rows are mapped by an exact translation and power-of-two scaling
([`L2Rescaling`][L2Rescaling]) that leave every nearest neighbour in place: the translation
removes a common offset that faiss's float32 ``|x|^2 + |y|^2 - 2xy`` would otherwise cancel
away, the scaling keeps its squares from overflowing or vanishing.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# Centre L2 rows whose common offset exceeds this many times their half-range. faiss's exact
# search computes |x|^2 + |y|^2 - 2xy in float32, so its error grows with |x|^2: on 2e4
# unit-normal points in 8-D shifted by 100 (offset/half-range ~ 8), recall@10 was 0.986, by
# 1000 it was 0.44. Translating is exact in float64; below this ratio the gain is under ~25x
# on an error that is already negligible, and the rows keep their plain float32 rounding.
_CENTRE_OFFSET_RATIO = 4.0


@dataclass(frozen=True)
class L2Rescaling:
    """How rows become faiss's float32 for the L2 metric: ``(x - shift) / 2**exponent``.

    Both maps leave every Euclidean nearest neighbour in place; distances are scaled back by
    ``2**exponent`` (the shift does not change them).

    Attributes
    ----------
    shift : ndarray of shape (n_features,) or None
        Subtracted in float64 before the conversion (the midrange of each column), or None.
    exponent : int
        Power of two the (shifted) rows are divided by (0: none).
    """

    shift: np.ndarray | None = None
    exponent: int = 0


NO_RESCALING = L2Rescaling()


@dataclass
class _ColumnRange:
    """Per-column minimum and maximum of rows seen so far (float64)."""

    low: np.ndarray
    high: np.ndarray

    def merged(self, other: _ColumnRange | None) -> _ColumnRange:
        if other is None:
            return self
        return _ColumnRange(np.minimum(self.low, other.low), np.maximum(self.high, other.high))


def _rows_f32(X: np.ndarray, start: int, stop: int, metric: str, name: str,
              offset: int = 0, rescaling: L2Rescaling = NO_RESCALING) -> np.ndarray:
    """Rows ``start:stop`` as C-contiguous float32: unit-normalised for the cosine metric,
    mapped by ``rescaling`` (exact, see [`L2Rescaling`][L2Rescaling]) for the L2 metric."""
    if metric == "l2" and rescaling.shift is not None:
        rows64 = np.asarray(X[start:stop], dtype=np.float64) - rescaling.shift
        if rescaling.exponent:
            rows64 = np.ldexp(rows64, -rescaling.exponent)
        return np.ascontiguousarray(rows64, dtype=np.float32)
    rows = np.ascontiguousarray(X[start:stop], dtype=np.float32)
    if metric == "cosine":
        rows, zero = unit_rows(rows)
        if zero.any():
            bad = offset + start + int(np.flatnonzero(zero)[0])
            raise ValueError(f"{name} row {bad} is all zeros; the cosine metric is undefined for "
                             "zero vectors (remove them or use metric='l2').")
    elif rescaling.exponent:
        rows = np.ldexp(rows, -rescaling.exponent)
    return rows


def _check_rows(X: np.ndarray, metric: str, name: str) -> _ColumnRange | None:
    """One streaming pass: finite after float32 conversion, no zero rows for cosine.

    Returns each column's range for the L2 metric (what [`_l2_rescaling`][_l2_rescaling]
    needs), None for the cosine metric.
    """
    step = _chunk_rows(X)
    columns = None
    for start in range(0, X.shape[0], step):
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            rows = np.asarray(X[start:start + step], dtype=np.float32)
        check_finite_rows(rows, offset=start, name=name, note=" (after conversion to float32)")
        if metric == "cosine":
            _rows_f32(rows, 0, rows.shape[0], metric, name, offset=start)
        else:
            chunk = _ColumnRange(rows.min(axis=0).astype(np.float64),
                                 rows.max(axis=0).astype(np.float64))
            columns = chunk.merged(columns)
    return columns


def _l2_rescaling(columns: _ColumnRange) -> L2Rescaling:
    """The shift and power of two of [`L2Rescaling`][L2Rescaling] for rows of this range.

    The rows are centred on each column's midrange when their common offset is more than
    ``_CENTRE_OFFSET_RATIO`` times their half-range (see that constant for why). faiss squares
    float32 values: beyond ~1e19 the squares overflow (neighbours come back as id -1) and
    below ~1e-19 they vanish (every distance 0). Scaling by a power of two is exact, so the
    neighbours are those of the original data at any scale, as long as the distances
    themselves fit in float32.
    """
    middle = 0.5 * (columns.low + columns.high)
    half_range = 0.5 * (columns.high - columns.low)
    centre = np.linalg.norm(middle) > _CENTRE_OFFSET_RATIO * np.linalg.norm(half_range)
    if centre:
        max_abs = float(half_range.max())
        shift = middle
    else:
        max_abs = float(max(columns.high.max(), -columns.low.min()))
        shift = None
    n_features = columns.low.size
    largest_distance = 2.0 * max_abs * np.sqrt(n_features)
    if largest_distance >= np.finfo(np.float32).max:
        raise ValueError(
            f"X's values are too large for float32 distances (largest magnitude {max_abs:.3g}, "
            f"so distances up to ~{largest_distance:.3g}, above float32's "
            f"{float(np.finfo(np.float32).max):.3g}); divide X by a constant first (the kNN "
            "graph does not change) or use metric='cosine'.")
    return L2Rescaling(shift=shift, exponent=power_of_two_exponent(max_abs))
