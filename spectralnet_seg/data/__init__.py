"""Feature data that need not fit in memory: sources, minibatch loaders and shard files.

- [`FeatureSource`][FeatureSource] and its implementations ([`ArraySource`][ArraySource] for arrays
and
  memmaps, [`NpyShardSource`][NpyShardSource] for directories of ``.npy`` shards,
  [`TorchDatasetSource`][TorchDatasetSource] for torch datasets), built by
  [`as_feature_source`][as_feature_source].
- [`make_loader`][make_loader]: a seeded (and, under torch.distributed, rank-split) DataLoader of
  float32 minibatches.
- [`extract_to_shards`][extract_to_shards] / [`load_shards`][load_shards]: resumable feature
extraction to disk
  ([`list_image_files`][list_image_files] expands image folders for it).
"""

from .convert import TorchDatasetSource, as_feature_source, check_finite_chunked
from .extract import extract_to_shards, list_image_files
from .loader import RowBatchSampler, make_loader, set_epoch
from .shards import ShardInfo, ShardManifest
from .sources import ArraySource, FeatureSource, NpyShardSource, load_shards

__all__ = [
    "ArraySource",
    "FeatureSource",
    "NpyShardSource",
    "RowBatchSampler",
    "ShardInfo",
    "ShardManifest",
    "TorchDatasetSource",
    "as_feature_source",
    "check_finite_chunked",
    "extract_to_shards",
    "list_image_files",
    "load_shards",
    "make_loader",
    "set_epoch",
]
