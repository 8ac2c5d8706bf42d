"""[`ArraySource`][ArraySource]: a numpy array, ``np.memmap`` or CPU torch tensor as a feature source.

A C-ordered memmap is read with ``pread`` from its file (see ``_io``), so resident memory grows
only by the rows read; other memmaps are indexed directly, with their mapped pages released
after a bounded number of bytes.
"""

from __future__ import annotations

import mmap

import numpy as np

from . import _io
from ._feature_source import FeatureSource

# Memmap fallback path: release mapped pages after this many bytes were read.
DEFAULT_MAX_RESIDENT_BYTES = 256 * 2**20


def _check_storage(array, what: str) -> None:
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape "
                         f"{array.shape}; reshape it, e.g. features.reshape(-1, d).")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must hold numbers, got dtype {array.dtype}.")


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

    def _slice(self, start: int, stop: int, dtype=np.float32) -> np.ndarray:
        if self._tensor is not None:
            return self._tensor[start:stop].float().numpy()
        if self._file is not None:
            return self._file.read_slice(
                start, stop, out=np.empty((stop - start, self.n_features), dtype=dtype))
        out = np.array(self.array[start:stop], dtype=dtype)
        if self._mapped:
            self._after_mapped_read(out.shape[0] * self.n_features * self.dtype.itemsize)
        return out

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        return self._slice(start, stop, dtype=self.dtype)

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


def _is_torch_tensor(obj) -> bool:
    torch = _torch_or_none()
    return torch is not None and isinstance(obj, torch.Tensor)


def _torch_or_none():
    import sys

    return sys.modules.get("torch")  # never import torch just to answer "is it a tensor?"
