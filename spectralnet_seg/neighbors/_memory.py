"""Memory bounds of a kNN job: what is available, what a job needs, and the refusal.

A job whose estimate exceeds the budget raises [`KNNMemoryError`][KNNMemoryError] before it
starts, instead of crashing half-way.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys

from ._index import _INDEXES, _MAX_POINTS_PER_LIST, _default_n_lists
from ._rows import _CHUNK_BYTES

# Bytes of per-batch temporaries (query copy, faiss result buffers) the default batch size aims at.
_BATCH_BYTES = 256 * 2**20
# Fixed overhead: faiss's BLAS tiles (4096 queries x 1024 database rows), heaps, Python objects.
_OVERHEAD_BYTES = 64 * 2**20


class KNNMemoryError(ValueError, MemoryError):
    """A kNN job whose memory estimate exceeds the allowed budget (raised before it starts)."""


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate, or ``None`` when it cannot be determined.

    The minimum of ``MemAvailable`` (``/proc/meminfo``, else free pages from ``os.sysconf``),
    the cgroup limit minus current usage (containers), and the ``RLIMIT_AS`` soft limit minus
    the current virtual size (a ``ulimit -v`` / ``resource.setrlimit`` budget).
    """
    candidates = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            with open(limit_file) as fh:
                limit = fh.read().strip()
            if limit != "max" and int(limit) < 2**60:
                with open(usage_file) as fh:
                    candidates.append(int(limit) - int(fh.read().strip()))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        vm_size = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmSize:"):
                        vm_size = int(line.split()[1]) * 1024
        candidates.append(soft - vm_size)
    return max(0, min(candidates)) if candidates else None


def _default_batch_size(n_queries: int, n_features: int, n_neighbors: int) -> int:
    # A query costs its float32 copy plus faiss's and our result buffers (float32 + int64, twice).
    per_query = 4 * n_features + 24 * (n_neighbors + 1)
    return int(min(max(1, n_queries), max(256, min(65536, _BATCH_BYTES // per_query))))


def estimate_knn_memory(n_database: int, n_queries: int, n_features: int, n_neighbors: int,
                        index: str = "flat", batch_size: int | None = None, *,
                        hnsw_m: int = 32, n_lists: int | None = None) -> int:
    """Peak memory (bytes) a [`knn_search`][knn_search] job needs, estimated before it starts.

    Parameters
    ----------
    n_database, n_queries, n_features, n_neighbors : int
        Size of the job (``n_neighbors`` as searched, i.e. +1 when excluding self).
    index : {"flat", "hnsw", "ivf"}, default="flat"
        Index type (see [`knn_search`][knn_search]).
    batch_size : int, optional
        Queries per batch; the default of [`knn_search`][knn_search] when ``None``.
    hnsw_m : int, default=32
        HNSW links per node.
    n_lists : int, optional
        IVF lists; the default of [`knn_search`][knn_search] when ``None``.

    Returns
    -------
    int
        Estimated bytes: the index, the returned arrays, per-batch temporaries and a fixed
        overhead. The index lives in GPU memory when a GPU index is used.
    """
    if index not in _INDEXES:
        raise ValueError(f"unknown index {index!r}; use one of {_INDEXES}")
    d, k = int(n_features), int(n_neighbors)
    vectors = 4 * int(n_database) * d
    if index == "flat":
        index_bytes = vectors
    elif index == "ivf":
        n_lists = n_lists or _default_n_lists(n_database)
        n_train = min(n_database, _MAX_POINTS_PER_LIST * n_lists)
        # vectors + int64 ids in the lists, the centroids, and the training subsample.
        index_bytes = vectors + 8 * n_database + 4 * n_lists * d + 4 * n_train * d
    else:
        # level 0 stores 2M int32 links per node, upper levels ~M/(M-1) more; plus level tables.
        index_bytes = vectors + int(n_database * (8 * hnsw_m * 1.1 + 16))
    batch = batch_size or _default_batch_size(n_queries, d, k)
    batch = min(batch, max(1, n_queries))
    outputs = 12 * int(n_queries) * k
    temporaries = batch * (4 * d + 24 * k) + min(_CHUNK_BYTES, vectors)
    return int(index_bytes + outputs + temporaries + _OVERHEAD_BYTES)


def _check_memory(estimate: float, max_memory_bytes, verbose: bool, job: str) -> None:
    """Refuse a job whose estimated memory exceeds the budget (``KNNMemoryError``)."""
    budget = max_memory_bytes if max_memory_bytes is not None else available_memory_bytes()
    if verbose:
        print(f"knn_search: {job}: ~{estimate / 2**30:.2f} GiB estimated"
              + (f" (budget {budget / 2**30:.2f} GiB)" if budget is not None else ""),
              file=sys.stderr)
    if budget is not None and estimate > budget:
        allowed_by = "max_memory_bytes" if max_memory_bytes is not None else "available memory"
        raise KNNMemoryError(
            f"the kNN search would need about {estimate / 2**30:.2f} GiB but only "
            f"{budget / 2**30:.2f} GiB are allowed ({allowed_by}); "
            "lower batch_size, use index='ivf' or index='hnsw' for large databases, reduce "
            "n_neighbors or the feature dimension, or raise max_memory_bytes."
        )
