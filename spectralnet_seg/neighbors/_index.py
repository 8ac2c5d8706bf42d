"""Index choice and construction: exact ``IndexFlat``, ``IndexHNSWFlat`` or ``IndexIVFFlat``.

Builds the faiss index for the chosen metric (inner product on unit rows for cosine, L2 on
them once centred, see [`FaissRows`][spectralnet_seg.neighbors._rows.FaissRows]), trains IVF
on a seeded subsample, moves it to the GPU(s) when asked, and adds the database in
chunks.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from ._backend import _to_gpu, faiss_gpu_count
from ._rows import NO_RESCALING, FaissRows, _chunk_rows, _rows_f32

_INDEXES = ("flat", "hnsw", "ivf")
# faiss warns (and clusters badly) with fewer than 39 training points per IVF list.
_MIN_POINTS_PER_LIST = 39
_MAX_POINTS_PER_LIST = 256


def _default_n_lists(n_database: int) -> int:
    """~4 sqrt(n) inverted lists, with at least 39 training points per list (faiss's minimum)."""
    return int(max(1, min(round(4 * np.sqrt(n_database)), n_database // _MIN_POINTS_PER_LIST)))


def _build_index(faiss, X, metric, index, gpu, hnsw_m, ef_search, n_lists, n_probe,
                 random_state, n_search, rescaling: FaissRows = NO_RESCALING):
    d = X.shape[1]
    n = X.shape[0]
    faiss_metric = (faiss.METRIC_L2 if rescaling.faiss_l2(metric)
                    else faiss.METRIC_INNER_PRODUCT)
    if index == "flat":
        built = faiss.IndexFlat(d, faiss_metric)
    elif index == "hnsw":  # faiss has no GPU HNSW: always on the CPU
        built = faiss.IndexHNSWFlat(d, hnsw_m, faiss_metric)
        built.hnsw.efSearch = max(ef_search, n_search)
        gpu = None
    else:
        quantizer = faiss.IndexFlat(d, faiss_metric)
        built = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss_metric)
        built.nprobe = min(n_probe, n_lists)
        rng = check_random_state(random_state)
        built.cp.seed = int(rng.randint(np.iinfo(np.int32).max))
        n_train = min(n, _MAX_POINTS_PER_LIST * n_lists)
        train_ids = np.sort(rng.choice(n, size=n_train, replace=False))
        clustering = None
        if gpu is not None:  # k-means assignment on the GPU(s); the trained index is cloned below
            # Keep a Python reference: faiss only stores a raw pointer to the clustering index.
            clustering = _to_gpu(faiss, faiss.IndexFlatL2(d), gpu)
            built.clustering_index = clustering
        built.train(_rows_f32(X[train_ids], 0, n_train, metric, "X", rescaling=rescaling))
        if clustering is not None:
            built.clustering_index = None
    # A database sharded across GPUs (faiss IndexShards with successive ids) takes a single
    # add(): fill the index on the CPU chunk by chunk, then let the cloner split it.
    sharded = gpu == -1 and faiss_gpu_count() > 1
    if gpu is not None and not sharded:
        built = _to_gpu(faiss, built, gpu)
    step = _chunk_rows(X)
    for start in range(0, n, step):
        built.add(_rows_f32(X, start, start + step, metric, "X", rescaling=rescaling))
    if sharded:
        built = _to_gpu(faiss, built, gpu)
    return built
