"""The [`FeatureSource`][FeatureSource] interface: row access to a (n_samples, n_features) matrix.

A source answers two kinds of reads, the only two that training and inference need: a random
gather of rows ([`take`][FeatureSource.take], one minibatch) and a sequential pass in chunks
([`iter_chunks`][FeatureSource.iter_chunks]). Subclasses supply the storage: ``_array_source``
(arrays, memmaps, tensors), ``_shard_source`` (``.npy`` shard files) and ``convert``
(torch datasets).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np

#: Most rows per chunk of a sequential pass (finiteness checks, inference).
DEFAULT_CHUNK_SIZE = 8192
#: Bytes of float32 rows per chunk. Chunks of wide features (8192 rows of 1024 float32 are
#: 32 MiB) and their temporaries would be allocated by glibc from its heap once its dynamic
#: mmap threshold has grown, and that memory is not returned: peak memory would then grow
#: with the chunk size and vary with allocation order.
CHUNK_BYTES = 8 * 2**20


def chunk_rows(n_features: int) -> int:
    """Rows per chunk of ``n_features`` float32 columns: at most ``CHUNK_BYTES`` each.

    Examples
    --------
    >>> chunk_rows(64), chunk_rows(1024), chunk_rows(10**7)
    (8192, 2048, 1)
    """
    return max(1, min(DEFAULT_CHUNK_SIZE, CHUNK_BYTES // (4 * max(1, n_features))))


class FeatureSource(abc.ABC):
    """Rows of a (n_samples, n_features) feature matrix, read on demand.

    Subclasses implement ``__len__``, [`n_features`][n_features], [`dtype`][dtype] and
    [`take`][take]; slicing, integer/boolean indexing, chunked iteration and ``np.asarray``
    come from these. Indexing follows numpy: ``source[idx]`` with an integer array gives
    ``(len(idx), n_features)``, an integer gives one row ``(n_features,)``, a slice gives the
    rows in it, and ``source[rows, cols]`` selects columns of those rows. Results are always
    new float32 arrays, never views of the storage.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of rows."""

    @property
    @abc.abstractmethod
    def n_features(self) -> int:
        """Number of columns."""

    @property
    @abc.abstractmethod
    def dtype(self) -> np.dtype:
        """Storage dtype (rows are returned as float32 whatever it is)."""

    @abc.abstractmethod
    def _take(self, indices: np.ndarray) -> np.ndarray:
        """Gather rows for valid, non-negative int64 ``indices``; return float32 (k, d)."""

    # ---------------------------------------------------------------- derived API
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_samples, n_features)``."""
        return (len(self), self.n_features)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        """Size of the stored data in bytes."""
        return len(self) * self.n_features * self.dtype.itemsize

    def take(self, indices) -> np.ndarray:
        """Gather rows ``indices`` (any order, repeats allowed, negative from the end).

        Parameters
        ----------
        indices : array-like of int of shape (k,)
            Row numbers.

        Returns
        -------
        ndarray of shape (k, n_features), float32
        """
        return self._take(self._normalize_indices(indices))

    def iter_chunks(self, chunk_size: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of at most ``chunk_size`` rows, in order.

        Parameters
        ----------
        chunk_size : int, optional
            Rows per block; default: at most 8192 rows and about 8 MiB of float32,
            whatever the width.

        Yields
        ------
        ndarray of shape (<= chunk_size, n_features), float32
        """
        chunk_size = (chunk_rows(self.n_features) if chunk_size is None
                      else _check_positive_int(chunk_size, "chunk_size"))
        for start in range(0, len(self), chunk_size):
            yield self._slice(start, min(start + chunk_size, len(self)))

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as stored (float64 storage as float64), for checks of what
        the float32 conversion does to them; float32 for sources that convert on reading.

        Parameters
        ----------
        start, stop : int
            Row range, ``0 <= start <= stop <= len(self)``.

        Returns
        -------
        ndarray of shape (stop - start, n_features)
        """
        return self._slice(start, stop)

    def to_numpy(self) -> np.ndarray:
        """All rows in one float32 array (loads everything: for small data only)."""
        return self._slice(0, len(self))

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a FeatureSource cannot be viewed as an array without a copy.")
        out = self.to_numpy()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"a FeatureSource is 2-D; got {len(key)} indices.")
            rows, cols = key
            return self[rows][..., cols]
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return self.take(np.array([key]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._slice(start, max(start, stop))
            return self._take(np.arange(start, stop, step, dtype=np.int64))
        return self.take(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"

    # ---------------------------------------------------------------- helpers
    def _slice(self, start: int, stop: int) -> np.ndarray:
        """Contiguous rows ``[start, stop)``; subclasses override with a faster read."""
        return self._take(np.arange(start, stop, dtype=np.int64))

    def _normalize_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} does not match the "
                                 f"{len(self)} rows.")
            return np.flatnonzero(idx).astype(np.int64)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"row indices must be integers or booleans, got dtype {idx.dtype}.")
        if idx.ndim != 1:
            raise IndexError(f"row indices must be 1-D, got shape {idx.shape}.")
        n = len(self)
        if idx.dtype.kind == "u" and idx.max() >= n:  # uint64 would wrap to negative in int64
            raise IndexError(f"row index {int(idx.max())} is out of bounds for a source "
                             f"with {n} rows.")
        idx = idx.astype(np.int64, copy=True)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(f"row index {int(idx[bad][0])} is out of bounds for a source "
                             f"with {n} rows.")
        idx[idx < 0] += n
        return idx


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
