"""k-nearest-neighbour search: the one part of the package that talks to faiss.

Everything faiss-specific lives here: index choice (exact ``IndexFlat``, approximate
``IndexHNSWFlat`` and ``IndexIVFFlat``), float32 / C-contiguous conversion, query batching with
bounded memory, GPU indexes when faiss was built with GPU support (single GPU, or all GPUs
with faiss's own sharding), thread control, and a memory estimate that refuses a job which
would not fit instead of crashing half-way.

One private module per job: ``_search`` ([`knn_search`][knn_search], the entry point),
``_plan`` (checks and batch sizes before searching), ``_memory`` (memory available and
needed), ``_rows`` (input checks and chunked float32 reads), ``_index`` (building the faiss
index), ``_backend`` (importing faiss, GPU placement), ``_threads`` (OpenMP threads) and
``_batches`` (the batched search and its results).

>>> import numpy as np
>>> from spectralnet_seg.neighbors import knn_search
>>> X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
>>> dist, ind = knn_search(X, n_neighbors=2)
>>> ind[0].tolist(), dist[0].round(3).tolist()
([1, 2], [1.0, 2.0])
"""

from __future__ import annotations

# Besides the public names, the private helpers that kernels, tests and benchmarks import
# from here (where they lived when this was one module). A patch must target the module that
# looks a name up: ``_backend.faiss_gpu_count`` for ``_resolve_gpu``, ``_search._build_index``
# for ``knn_search``.
from ._backend import _resolve_gpu, faiss_gpu_count  # noqa: F401
from ._index import _build_index, _default_n_lists  # noqa: F401
from ._memory import KNNMemoryError, available_memory_bytes, estimate_knn_memory
from ._rows import _as_2d  # noqa: F401
from ._search import knn_search
from ._threads import _faiss_threads, _search_work  # noqa: F401

__all__ = [
    "KNNMemoryError",
    "available_memory_bytes",
    "estimate_knn_memory",
    "faiss_gpu_count",
    "knn_search",
]
