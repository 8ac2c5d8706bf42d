"""[`NpyShardSource`][NpyShardSource]: rows spread over ``.npy`` shard files, and
[`load_shards`][load_shards], which opens the shards of an extraction as one such source.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import _io
from ._feature_source import FeatureSource, _check_positive_int
from .shards import ShardManifest, _check_shard_shapes, _shard_is_intact, resolve_shard_files


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
        if self._n_features == 0:
            raise ValueError(f"the shards hold 0 features per row (shape {self._shards[0].shape} "
                             "for the first); there is nothing to read from them.")
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

    def read_stored(self, start: int, stop: int) -> np.ndarray:
        return self._slice(start, stop, dtype=self.dtype)

    def _slice(self, start: int, stop: int, dtype=np.float32) -> np.ndarray:
        out = np.empty((stop - start, self.n_features), dtype=dtype)
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
