"""Feature data that need not fit in memory: sources, minibatch loaders and shard files.

- :class:`FeatureSource` and its implementations (:class:`ArraySource` for arrays and
  memmaps, :class:`NpyShardSource` for directories of ``.npy`` shards,
  :class:`TorchDatasetSource` for torch datasets), built by :func:`as_feature_source`.
- :func:`make_loader`: a seeded (and, under torch.distributed, rank-split) DataLoader of
  float32 minibatches.
- :func:`extract_to_shards` / :func:`load_shards`: resumable feature extraction to disk
  (:func:`list_image_files` expands image folders for it).
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
