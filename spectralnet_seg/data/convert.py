"""Turning user input into a [`FeatureSource`][spectralnet_seg.data.FeatureSource].

[`as_feature_source`][as_feature_source] picks the source for an array, memmap, tensor, path, shard
directory or torch ``Dataset``; [`TorchDatasetSource`][TorchDatasetSource] adapts map-style
datasets; and
[`check_finite_chunked`][check_finite_chunked] validates a source without loading it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._utils import check_finite_rows, is_path_list
from . import _io
from .sources import (
    ArraySource,
    FeatureSource,
    NpyShardSource,
    _is_torch_tensor,
    _torch_or_none,
)


class TorchDatasetSource(FeatureSource):
    """A ``torch.utils.data.Dataset`` whose item ``i`` is feature row ``i``.

    Items may be tensors or arrays of shape (n_features,), or tuples whose first element is
    that row (``(features, label)`` datasets). A dataset with ``__getitems__`` gets whole
    batches in one call.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Map-style dataset with ``__len__``.
    """

    def __init__(self, dataset):
        import torch.utils.data

        # torch's Dataset defines __getitem__ (raising NotImplementedError), so an
        # IterableDataset with __len__ would pass a hasattr test.
        if (isinstance(dataset, torch.utils.data.IterableDataset)
                or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__")):
            raise TypeError("TorchDatasetSource needs a map-style Dataset with __len__ and "
                            "__getitem__; iterable datasets cannot be indexed.")
        self.dataset = dataset
        if len(dataset) == 0:
            raise ValueError("the dataset is empty.")
        first = self._row(dataset[0])
        self._n_features = first.shape[0]
        self._dtype = first.dtype

    @staticmethod
    def _row(item) -> np.ndarray:
        if isinstance(item, (tuple, list)):
            item = item[0]
        row = item.detach().cpu().float().numpy() if _is_torch_tensor(item) \
            else np.asarray(item)
        if row.ndim != 1:
            raise ValueError(f"dataset items must be 1-D feature rows, got shape {row.shape}.")
        return row

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _take(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.n_features), dtype=np.float32)
        if len(indices) == 0:
            return out
        index_list = indices.tolist()
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(index_list) if getitems is not None else \
            [self.dataset[i] for i in index_list]
        if len(items) != len(index_list):  # rows left unwritten would be np.empty garbage
            raise ValueError(f"the dataset's __getitems__ returned {len(items)} items for "
                             f"{len(index_list)} indices; it must return one per index, in "
                             "order (duplicates included).")
        for k, item in enumerate(items):
            row = self._row(item)
            if row.shape[0] != self.n_features:
                raise ValueError(f"dataset item {index_list[k]} has {row.shape[0]} features, "
                                 f"item 0 has {self.n_features}.")
            out[k] = row
        return out


def as_feature_source(obj, **kwargs) -> FeatureSource:
    """Wrap ``obj`` in the matching [`FeatureSource`][FeatureSource] (a source is returned as is).

    Parameters
    ----------
    obj : FeatureSource, ndarray, np.memmap, torch.Tensor, Dataset, path or list of paths
        A directory of ``.npy`` shards (with or without ``manifest.json``), a single ``.npy``
        file (memory-mapped), a list of shard files, an in-memory array or tensor, a torch
        ``Dataset`` of rows, or nested lists of numbers.
    **kwargs
        Passed to the source's constructor (e.g. ``max_resident_bytes``).

    Returns
    -------
    FeatureSource
    """
    if isinstance(obj, FeatureSource):
        return obj
    if isinstance(obj, np.ndarray) or _is_torch_tensor(obj):
        return ArraySource(obj, **kwargs)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if path.is_file() and path.suffix.lower() == ".npy":
            _io.read_npy_header(path)  # a clear error for a truncated or foreign file
            return ArraySource(np.load(path, mmap_mode="r"), **kwargs)
        if path.is_file():
            raise ValueError(f"{path} is not a .npy file; save features with np.save or "
                             "point to a directory of .npy shards.")
        return NpyShardSource(path, **kwargs)
    torch = _torch_or_none()
    if torch is not None and isinstance(obj, torch.utils.data.Dataset):
        return TorchDatasetSource(obj)
    if is_path_list(obj):
        return NpyShardSource(obj, **kwargs)
    try:
        array = np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"cannot use {type(obj).__name__} as features: {exc}") from exc
    if array.dtype == object:
        raise TypeError(f"cannot use {type(obj).__name__} as features; pass an array, memmap, "
                        "tensor, Dataset or a directory of .npy shards.")
    return ArraySource(array, **kwargs)


def check_finite_chunked(source, chunk_size: int | None = None, *,
                         name: str = "X") -> FeatureSource:
    """Raise a ValueError naming the first row with NaN or infinity, reading in chunks.

    Parameters
    ----------
    source : FeatureSource or anything [`as_feature_source`][as_feature_source] accepts
        The features.
    chunk_size : int, optional
        Rows read at a time (memory is ``chunk_size * n_features * 4`` bytes); default: at
        most 8192 rows and about 8 MiB of float32, whatever the width.
    name : str, default="X"
        Name used in the message.

    Returns
    -------
    FeatureSource
        The source, for chaining.
    """
    source = as_feature_source(source)
    start = 0
    for chunk in source.iter_chunks(chunk_size):
        check_finite_rows(chunk, offset=start, name=name)
        start += len(chunk)
    return source
