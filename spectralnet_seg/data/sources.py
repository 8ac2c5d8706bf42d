"""Feature sources: row access to (n_samples, n_features) data that need not fit in memory.

A [`FeatureSource`][FeatureSource] answers two kinds of reads, the only two that training and
inference need: a random gather of rows ([`take`][FeatureSource.take], one minibatch) and a
sequential pass in chunks ([`iter_chunks`][FeatureSource.iter_chunks], transform / predict /
validation). Both return float32 arrays of the requested rows only, so memory stays
proportional to the batch, whatever the size of the data behind it.

Files are read with ``pread`` rather than through a memory map (see ``_io``), so reading
a memmap or a directory of shards adds only the rows read to the process's resident memory,
however large the files and however many passes are made.
"""

from __future__ import annotations

import abc
import mmap
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from . import _io
from .shards import ShardManifest, _check_shard_shapes, _shard_is_intact, resolve_shard_files

# Memmap fallback path: release mapped pages after this many bytes were read.
DEFAULT_MAX_RESIDENT_BYTES = 256 * 2**20
DEFAULT_CHUNK_SIZE = 65536


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

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of at most ``chunk_size`` rows, in order.

        Parameters
        ----------
        chunk_size : int, default=65536
            Rows per block.

        Yields
        ------
        ndarray of shape (<= chunk_size, n_features), float32
        """
        chunk_size = _check_positive_int(chunk_size, "chunk_size")
        for start in range(0, len(self), chunk_size):
            yield self._slice(start, min(start + chunk_size, len(self)))

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
        idx = idx.astype(np.int64, copy=True)
        n = len(self)
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


def _check_storage(array, what: str) -> None:
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape "
                         f"{array.shape}; reshape it, e.g. features.reshape(-1, d).")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must hold numbers, got dtype {array.dtype}.")


# ---------------------------------------------------------------------- sources
class ArraySource(FeatureSource):
    """A numpy array, ``np.memmap`` or CPU torch tensor, used in place (no copy).

    A C-ordered memmap is read with ``pread`` from its file, so resident memory grows only
    by the rows read. Other memmaps (copy-on-write, strided views) are indexed directly and
    their mapped pages are dropped after ``max_resident_bytes`` were read.

    Parameters
    ----------
    array : ndarray, np.memmap or torch.Tensor of shape (n_samples, n_features)
        The data. Any numeric dtype; rows are returned as float32. A CUDA tensor is brought
        to the host once; a bfloat16 tensor is kept as a tensor and converted per batch.
    max_resident_bytes : int or None, default=256 MiB
        Memmap fallback path only: release mapped pages after this many bytes were read.
        None never releases.

    Examples
    --------
    >>> import numpy as np
    >>> src = ArraySource(np.arange(12).reshape(4, 3))
    >>> src.shape, src[[3, 0]].tolist()
    ((4, 3), [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]])
    """

    def __init__(self, array, *, max_resident_bytes: int | None = DEFAULT_MAX_RESIDENT_BYTES):
        self.max_resident_bytes = max_resident_bytes
        self._tensor = None
        if _is_torch_tensor(array):
            import torch

            array = array.detach().cpu()
            if array.dtype == torch.bfloat16:  # numpy has no bfloat16
                if array.ndim != 2:
                    raise ValueError(f"the tensor must be 2-D, got shape {tuple(array.shape)}.")
                self._tensor = array
            else:
                array = array.numpy()
        if self._tensor is None:
            if not isinstance(array, np.ndarray):
                raise TypeError(f"ArraySource needs an ndarray, memmap or tensor, got "
                                f"{type(array).__name__}; use as_feature_source for others.")
            _check_storage(array, "the feature array")
        self.array = array
        self._file = None if self._tensor is not None else _io.memmap_row_file(array)
        self._mapped = self._file is None and _io.find_mmap(array) is not None
        self._touched = 0

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.array.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self._tensor is not None else self.array.dtype

    def _after_mapped_read(self, nbytes: int) -> None:
        # Fallback path: a touched row maps at least a page (often a 2 MB folio).
        self._touched += nbytes
        if self.max_resident_bytes is not None and self._touched >= self.max_resident_bytes:
            _io.release_pages(self.array)
            self._touched = 0

    def _take(self, indices: np.ndarray) -> np.ndarray:
        if self._tensor is not None:
            import torch

            return self._tensor[torch.from_numpy(indices)].float().numpy()
        if self._file is not None:
            return self._file.read_rows(indices)
        out = _io.gather_rows(self.array, indices)
        if self._mapped:
            self._after_mapped_read(len(indices) * max(self.n_features * self.dtype.itemsize,
                                                       mmap.PAGESIZE))
        return out

    def _slice(self, start: int, stop: int) -> np.ndarray:
        if self._tensor is not None:
            return self._tensor[start:stop].float().numpy()
        if self._file is not None:
            return self._file.read_slice(start, stop)
        out = np.array(self.array[start:stop], dtype=np.float32)
        if self._mapped:
            self._after_mapped_read(out.shape[0] * self.n_features * self.dtype.itemsize)
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        if self._file is not None:
            # Pickle where the data are, not the data (DataLoader workers under spawn).
            state["array"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.array is None:
            f = self._file
            self.array = np.memmap(f.path, dtype=f.dtype, mode="r", offset=f.offset,
                                   shape=f.shape)


class NpyShardSource(FeatureSource):
    """Rows spread over several ``.npy`` files, read with ``pread`` (nothing is loaded).

    Shard ``i`` holds rows ``offsets[i]:offsets[i + 1]`` of the whole matrix. Only headers
    are read when the source is built; a gather reads each shard once, for all its rows,
    and resident memory grows only by the rows read.

    Parameters
    ----------
    files : path or sequence of paths
        A directory (its ``manifest.json`` shard list when it has one, else every ``*.npy``
        in name order) or the ``.npy`` files in row order.
    max_open_shards : int, default=64
        Shard files kept open (file descriptors); the least recently used is closed.
    """

    def __init__(self, files, *, max_open_shards: int = 64):
        self.files = resolve_shard_files(files)
        self.max_open_shards = _check_positive_int(max_open_shards, "max_open_shards")
        self._shards = []
        for path in self.files:
            shape, dtype, fortran, offset = _io.read_npy_header(path)
            if len(shape) != 2:
                raise ValueError(f"shard {path} has shape {shape}; shards must be 2-D "
                                 "(n_rows, n_features).")
            if fortran and shape[0] > 1 and shape[1] > 1:
                raise ValueError(f"shard {path} is stored in Fortran order; re-save it with "
                                 "np.save(path, np.ascontiguousarray(array)).")
            self._shards.append(_io.RowFile(path, offset, shape, dtype))
        widths = {f.shape[1] for f in self._shards}
        if len(widths) != 1:
            raise ValueError(f"shards disagree on n_features: {sorted(widths)}; every shard "
                             "must have the same number of columns.")
        dtypes = {f.dtype for f in self._shards}
        if len(dtypes) != 1:
            raise ValueError(f"shards disagree on dtype: {sorted(map(str, dtypes))}.")
        self._dtype = dtypes.pop()
        if self._dtype.kind not in "fiu":
            raise TypeError(f"shards must hold numbers, got dtype {self._dtype}.")
        self._n_features = widths.pop()
        self.offsets = np.concatenate([[0], np.cumsum([f.shape[0] for f in self._shards])]
                                      ).astype(np.int64)
        self._open: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def n_shards(self) -> int:
        return len(self.files)

    def _shard(self, i: int) -> _io.RowFile:
        # LRU over open descriptors: thousands of shards must not exhaust the fd limit.
        self._open[i] = None
        self._open.move_to_end(i)
        if len(self._open) > self.max_open_shards:
            old, _ = self._open.popitem(last=False)
            self._shards[old].close()
        return self._shards[i]

    def _take(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.n_features), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(self.n_shards + 1))
        for i in np.flatnonzero(np.diff(bounds)):
            pos = order[bounds[i]:bounds[i + 1]]
            out[pos] = self._shard(i).read_rows(indices[pos] - self.offsets[i])
        return out

    def _slice(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n_features), dtype=np.float32)
        first = max(int(np.searchsorted(self.offsets, start, side="right")) - 1, 0)
        for i in range(first, self.n_shards):
            if self.offsets[i] >= stop:
                break
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if hi > lo:
                self._shard(i).read_slice(int(lo - self.offsets[i]), int(hi - self.offsets[i]),
                                          out=out[lo - start:hi - start])
        return out

    def __getstate__(self):
        return {**self.__dict__, "_open": OrderedDict()}

    def __repr__(self) -> str:
        return (f"NpyShardSource(shape={self.shape}, dtype={self.dtype}, "
                f"n_shards={self.n_shards})")


def _is_torch_tensor(obj) -> bool:
    torch = _torch_or_none()
    return torch is not None and isinstance(obj, torch.Tensor)


def _torch_or_none():
    import sys

    return sys.modules.get("torch")  # never import torch just to answer "is it a tensor?"


def load_shards(out_dir, *, kind: str = "features", allow_incomplete: bool = False,
                verify: bool = False, **source_kwargs) -> NpyShardSource:
    """The shards written by [`extract_to_shards`][extract_to_shards] as one memory-mapped source.

    Parameters
    ----------
    out_dir : path
        Directory holding ``manifest.json``.
    kind : {"features", "colors", "positions"}, default="features"
        Which arrays to read; rows line up across kinds.
    allow_incomplete : bool, default=False
        Use the finished shards of an unfinished extraction instead of raising.
    verify : bool, default=False
        Check every file's SHA-256 against the manifest first (reads all data once).
    **source_kwargs
        Passed to [`NpyShardSource`][NpyShardSource] (``max_open_shards``).

    Returns
    -------
    NpyShardSource
        Rows in image order; ``ShardManifest.load(out_dir).image_row_ranges()`` maps
        images to rows.
    """
    manifest = ShardManifest.load(out_dir)
    files = manifest.files(kind, require_complete=not allow_incomplete)
    if not files:
        raise ValueError(f"{out_dir} has no finished shard yet.")
    _check_shard_shapes(manifest, kind, files)
    if verify:
        for info in manifest.shards:
            if not _shard_is_intact(manifest.directory, info, "checksum"):
                raise ValueError(f"shard {info.index} in {out_dir} does not match its "
                                 "checksum; rerun extract_to_shards (resume=True) to redo it.")
    return NpyShardSource(files, **source_kwargs)
