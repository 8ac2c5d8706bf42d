"""Reading the input: shape and dtype checks, and chunked float32 rows of arrays or memmaps.

Data are never converted whole: a ``numpy.memmap`` stays on disk and is read (and checked
for NaN / inf and, with the cosine metric, zero rows) in chunks of bounded size. The rows
faiss compares (the data, or its unit rows for the cosine metric) are mapped by an exact
translation and power-of-two scaling ([`FaissRows`][FaissRows]) that leave every nearest
neighbour in place: the translation removes a common offset (or direction) that faiss's
float32 ``|x|^2 + |y|^2 - 2xy`` would otherwise cancel away, the scaling keeps its squares
from overflowing or vanishing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._numeric import may_have_cancelled, power_of_two_exponent, share_an_offset, unit_rows
from .._utils import as_numpy, check_float32_rows

# Rows converted at a time when validating / adding the database (bounds the float32 copies).
_CHUNK_BYTES = 64 * 2**20


def _as_2d(X, name: str) -> np.ndarray:
    """Shape/dtype checks without copying (memory-mapped input stays on disk)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        raise TypeError(f"{name} is a sparse matrix; knn_search needs a dense array "
                        f"(call {name}.toarray() if it fits in memory).")
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor, possibly on a GPU
        X = as_numpy(X)  # bfloat16, which numpy lacks, as float32
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


@dataclass(frozen=True)
class FaissRows:
    """How rows become faiss's float32 and which faiss metric compares them.

    L2: ``(x - shift) / 2**exponent``. Cosine: unit rows ``u``, compared by inner product, or
    ``u - shift`` compared by L2 (``1 - cos = |u - v|^2 / 2``) when they share a direction.
    Every map leaves each query's nearest neighbours in place; L2 distances are scaled back by
    ``2**exponent`` (the shift does not change them).

    Attributes
    ----------
    shift : ndarray of shape (n_features,) or None
        Subtracted in float64 before the conversion (the rows' mean), or None.
    exponent : int
        Power of two the L2 rows are divided by (0: none).
    """

    shift: np.ndarray | None = None
    exponent: int = 0
    database_square: float | None = None

    def cancelled(self, queries: np.ndarray, squared_distances: np.ndarray) -> np.ndarray:
        """Queries whose k-th squared L2 distance faiss may have lost to cancellation
        ([`may_have_cancelled`][spectralnet_seg._numeric.may_have_cancelled], with
        ``database_square`` bounding ``|x|^2``). None is flagged when the bound is unknown
        (inner products).
        """
        if self.database_square is None:
            return np.zeros(queries.shape[0], dtype=bool)
        query_square = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)
        return may_have_cancelled(squared_distances[:, -1], query_square,
                                  self.database_square, queries.shape[1])

    def faiss_l2(self, metric: str) -> bool:
        """Whether faiss compares the rows by L2 distance (else by inner product)."""
        return metric == "l2" or self.shift is not None


NO_RESCALING = FaissRows()


@dataclass
class _RowStatistics:
    """Streaming statistics of the rows faiss will compare (float64 accumulators).

    Attributes
    ----------
    n : int
        Rows seen.
    total : ndarray of shape (n_features,)
        Sum of the rows.
    total_square : float
        Sum of their squared norms.
    low, high : ndarray of shape (n_features,)
        Per-column minimum and maximum.
    """

    n: int
    total: np.ndarray
    total_square: float
    low: np.ndarray
    high: np.ndarray
    max_square: float = 0.0

    @classmethod
    def of(cls, rows: np.ndarray) -> _RowStatistics:
        squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        return cls(rows.shape[0], rows.sum(axis=0, dtype=np.float64), float(squares.sum()),
                   rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64),
                   float(squares.max(initial=0.0)))

    def merged(self, other: _RowStatistics | None) -> _RowStatistics:
        if other is None:
            return self
        return _RowStatistics(self.n + other.n, self.total + other.total,
                              self.total_square + other.total_square,
                              np.minimum(self.low, other.low), np.maximum(self.high, other.high),
                              max(self.max_square, other.max_square))


def _rows_f32(X: np.ndarray, start: int, stop: int, metric: str, name: str,
              offset: int = 0, rescaling: FaissRows = NO_RESCALING) -> np.ndarray:
    """Rows ``start:stop`` as C-contiguous float32, mapped as ``rescaling`` says
    (see [`FaissRows`][FaissRows]): unit-normalised for the cosine metric, then shifted and
    scaled by powers of two."""
    if rescaling.shift is not None:  # in float64: the shift cancels most of each value
        # One float64 copy of the chunk (a second for the cosine's unit rows), worked on in
        # place; np.array copies even a float64 X, which is the caller's and stays untouched.
        rows64 = np.array(X[start:stop], dtype=np.float64)
        if metric == "cosine":
            rows64 = _unit_rows_checked(rows64, start + offset, name)
        rows64 -= rescaling.shift
        if rescaling.exponent:
            np.ldexp(rows64, -rescaling.exponent, out=rows64)
        return np.ascontiguousarray(rows64, dtype=np.float32)
    rows = np.ascontiguousarray(X[start:stop], dtype=np.float32)
    if metric == "cosine":
        rows = _unit_rows_checked(rows, start + offset, name)
    elif rescaling.exponent:
        rows = np.ldexp(rows, -rescaling.exponent)
    return rows


def _unit_rows_checked(rows: np.ndarray, first: int, name: str) -> np.ndarray:
    unit, zero = unit_rows(rows)
    if zero.any():
        bad = first + int(np.flatnonzero(zero)[0])
        raise ValueError(f"{name} row {bad} is all zeros; the cosine metric is undefined for "
                         "zero vectors (remove them or use metric='l2').")
    return unit


def _check_rows(X: np.ndarray, metric: str, name: str) -> _RowStatistics:
    """One streaming pass: finite after float32 conversion, no zero rows for cosine.

    Returns the statistics of the rows faiss will compare (the unit rows for the cosine
    metric), which [`faiss_rows`][faiss_rows] needs.
    """
    step = _chunk_rows(X)
    statistics = None
    for start in range(0, X.shape[0], step):
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            rows = np.asarray(X[start:start + step], dtype=np.float32)
        check_float32_rows(X[start:start + step], rows, offset=start, name=name,
                           precision_of="faiss's search")
        if metric == "cosine":
            rows = _rows_f32(rows, 0, rows.shape[0], metric, name, offset=start)
        statistics = _RowStatistics.of(rows).merged(statistics)
    return statistics


def faiss_rows(statistics: _RowStatistics, metric: str) -> FaissRows:
    """The [`FaissRows`][FaissRows] map for rows with these statistics.

    The rows are centred on their mean when it is more than ``CENTRE_OFFSET_RATIO`` times
    their spread ([`share_an_offset`][spectralnet_seg._numeric.share_an_offset]; see that
    constant for why; the mean, unlike the range, is not moved away by
    one outlier). For the L2 metric, faiss squares float32 values: beyond ~1e19 the squares
    overflow (neighbours come back as id -1) and below ~1e-19 they vanish (every distance 0).
    Scaling by a power of two is exact, so the neighbours are those of the original data at
    any scale, as long as the distances themselves fit in float32.
    """
    mean = statistics.total / statistics.n
    mean_square = float(mean @ mean)
    variance = statistics.total_square / statistics.n - mean_square  # float64: exact enough
    shift = mean if share_an_offset(mean_square, variance) else None
    origin = 0.0 if shift is None else shift
    max_abs = float(max(np.max(statistics.high - origin), np.max(origin - statistics.low)))
    n_features = statistics.low.size
    # |x|^2 of the rows faiss compares: the largest row norm, or after a shift the (looser)
    # box of the centred rows.
    if metric == "cosine":  # unit rows; centred ones are compared by L2
        return FaissRows(shift=shift, database_square=None if shift is None
                         else max_abs**2 * n_features)
    if shift is not None:
        # The range was measured on float32 rows, the shift is taken from the original (float64)
        # ones: they may lie outside it by float32's rounding, up to |x| * 2**-24 (for 1e30 data
        # with a spread of 1e20 that is the whole spread; without the margin the power of two
        # came out 0 and faiss's squares overflowed).
        peak = float(max(np.max(np.abs(statistics.low)), np.max(np.abs(statistics.high))))
        max_abs += peak * 2.0**-23
    largest_distance = 2.0 * max_abs * np.sqrt(n_features)
    if largest_distance >= np.finfo(np.float32).max:
        raise ValueError(
            f"X's values are too large for float32 distances (largest magnitude {max_abs:.3g}, "
            f"so distances up to ~{largest_distance:.3g}, above float32's "
            f"{float(np.finfo(np.float32).max):.3g}); divide X by a constant first (the kNN "
            "graph does not change) or use metric='cosine'.")
    exponent = power_of_two_exponent(max_abs)
    database_square = (float(np.ldexp(max_abs, -exponent))**2 * n_features if shift is not None
                       else float(np.ldexp(statistics.max_square, -2 * exponent)))
    return FaissRows(shift=shift, exponent=exponent, database_square=database_square)
