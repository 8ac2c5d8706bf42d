"""Feature sources: row access to (n_samples, n_features) data that need not fit in memory.

A [`FeatureSource`][FeatureSource] answers two kinds of reads, the only two that training and
inference need: a random gather of rows ([`take`][FeatureSource.take], one minibatch) and a
sequential pass in chunks ([`iter_chunks`][FeatureSource.iter_chunks], transform / predict /
validation). Both return float32 arrays of the requested rows only, so memory stays
proportional to the batch, whatever the size of the data behind it.

Files are read with ``pread`` rather than through a memory map (see ``_io``), so reading
a memmap or a directory of shards adds only the rows read to the process's resident memory,
however large the files and however many passes are made.

One private module per job: ``_feature_source`` (the [`FeatureSource`][FeatureSource]
interface), ``_array_source`` ([`ArraySource`][ArraySource]: arrays, memmaps, tensors) and
``_shard_source`` ([`NpyShardSource`][NpyShardSource] and [`load_shards`][load_shards]); the
torch-dataset source is [`TorchDatasetSource`][spectralnet_seg.data.TorchDatasetSource] in
``convert``. Every name is importable from here, as when this was one module.
"""

from __future__ import annotations

# Besides the public names, the constants and private helpers that ``convert`` and ``loader``
# import from here (where they lived when this was one module).
from ._array_source import (  # noqa: F401
    DEFAULT_MAX_RESIDENT_BYTES,
    ArraySource,
    _check_storage,
    _is_torch_tensor,
    _torch_or_none,
)
from ._feature_source import DEFAULT_CHUNK_SIZE, FeatureSource, _check_positive_int  # noqa: F401
from ._shard_source import NpyShardSource, load_shards  # noqa: F401
