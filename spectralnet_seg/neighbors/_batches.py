"""Searching the queries batch by batch, and turning faiss's results into the answer.

Per batch: queries read as float32, an exact search for rows an approximate index answered
with too few neighbours, a check that no missing neighbour (id -1) is handed back, distances
converted (Euclidean, or ``1 - cosine``), and each query's own index dropped when asked.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .._utils import progress
from ._plan import _SearchPlan
from ._rows import NO_RESCALING, FaissRows, _chunk_rows, _rows_f32

#: Held while faiss's global BLAS threshold is raised, so that concurrent searches cannot
#: save each other's raised value and leave it raised for the whole process.
_BLAS_THRESHOLD_LOCK = threading.Lock()


@contextmanager
def _direct_differences(faiss):
    """faiss computes L2 distances from the differences of the rows (no ``|q|^2 + |x|^2 -
    2 q.x`` expansion) for every query count, while it is open."""
    with _BLAS_THRESHOLD_LOCK:
        threshold = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold


def _cancelled_queries(X, queries, dist, ind, metric: str, rescaling: FaissRows) -> np.ndarray:
    """Queries whose neighbours the flat index's float32 expansion may have lost.

    [`FaissRows.cancelled`][FaissRows.cancelled] suspects a query whose k-th distance is
    small against the norms; a suspect whose returned neighbours all lie at distance exactly
    0 from it (duplicates: nothing can be nearer) is cleared by computing those distances
    from the rows' differences, so duplicated data are not searched twice.
    """
    suspect = rescaling.cancelled(queries, dist)
    step = max(1, _chunk_rows(X) // ind.shape[1])  # bounds the (rows, k, d) differences
    suspects = np.flatnonzero(suspect)
    for start in range(0, suspects.size, step):
        rows = suspects[start:start + step]
        ids = ind[rows]
        unique, position = np.unique(ids, return_inverse=True)
        found = _rows_f32(X[unique], 0, unique.size, metric, "X", rescaling=rescaling)
        differences = found[position.reshape(ids.shape)] - queries[rows][:, None, :]
        suspect[rows[~differences.any(axis=(1, 2))]] = False
    return suspect


def _exact_rows(faiss, X, queries, k, metric, rescaling: FaissRows = NO_RESCALING):
    """Exact search of a few queries, streaming over the database (fallback for -1 results,
    and inside [`_direct_differences`][_direct_differences] for queries cancellation may
    have hit)."""
    by_l2 = rescaling.faiss_l2(metric)
    heap = faiss.ResultHeap(queries.shape[0], k, keep_max=not by_l2)
    faiss_metric = faiss.METRIC_L2 if by_l2 else faiss.METRIC_INNER_PRODUCT
    step = _chunk_rows(X)
    for start in range(0, X.shape[0], step):
        block = _rows_f32(X, start, start + step, metric, "X", rescaling=rescaling)
        kb = min(k, block.shape[0])
        dist, ind = faiss.knn(queries, block, kb, metric=faiss_metric)
        if kb < k:
            dist = np.pad(dist, ((0, 0), (0, k - kb)),
                          constant_values=np.inf if by_l2 else -np.inf)
            ind = np.pad(ind, ((0, 0), (0, k - kb)), constant_values=-1)
        heap.add_result(np.ascontiguousarray(dist, dtype=np.float32),
                        np.ascontiguousarray(np.where(ind >= 0, ind + start, -1), dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I


def _drop_self(dist: np.ndarray, ind: np.ndarray, first_query: int):
    """Remove each query's own index (wherever duplicates put it), else its last neighbour."""
    own = np.arange(first_query, first_query + ind.shape[0])[:, None]
    is_self = ind == own
    is_self &= np.cumsum(is_self, axis=1) == 1  # only the first occurrence
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    k = ind.shape[1] - 1
    return dist[keep].reshape(-1, k), ind[keep].reshape(-1, k)


def _search_batches(faiss, built, X, Y, plan: _SearchPlan, metric: str,
                    rescaling: FaissRows, verbose: bool, *,
                    check_cancellation: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Search the queries in batches; distances as documented in [`knn_search`][knn_search]."""
    n_q = Y.shape[0]
    distances = np.empty((n_q, plan.n_neighbors), dtype=np.float32)
    indices = np.empty((n_q, plan.n_neighbors), dtype=np.int64)
    starts = range(0, n_q, plan.batch)
    for start in progress(starts, verbose=verbose, desc="kNN search", total=len(starts)):
        stop = min(start + plan.batch, n_q)
        queries = _rows_f32(Y, start, stop, metric, "Y", rescaling=rescaling)
        dist, ind = built.search(queries, plan.n_search)
        missing = (ind < 0).any(axis=1)
        if missing.any():  # approximate index found too few candidates for these rows
            dist[missing], ind[missing] = _exact_rows(faiss, X, queries[missing],
                                                      plan.n_search, metric, rescaling)
        cancelled = (_cancelled_queries(X, queries, dist, ind, metric, rescaling)
                     if check_cancellation and rescaling.faiss_l2(metric) else None)
        if cancelled is not None and cancelled.any():
            with _direct_differences(faiss):
                dist[cancelled], ind[cancelled] = _exact_rows(
                    faiss, X, queries[cancelled], plan.n_search, metric, rescaling)
        _check_results(dist, ind, start)
        if metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0.0))
            if rescaling.exponent:
                dist = np.ldexp(dist, rescaling.exponent)
        elif rescaling.faiss_l2(metric):  # centred unit rows: 1 - cos = |u - v|^2 / 2
            dist = np.maximum(dist, 0.0) * np.float32(0.5)
        else:  # similarity -> distance; rounding can make a self-match slightly negative
            dist = np.maximum(1.0 - dist, 0.0)
        if plan.exclude_self:
            dist, ind = _drop_self(dist, ind, start)
        distances[start:stop] = dist
        indices[start:stop] = ind
    return distances, indices


def _check_results(dist: np.ndarray, ind: np.ndarray, first_query: int) -> None:
    """Never hand back a missing neighbour (id -1) or a non-finite distance.

    faiss marks "no neighbour found" with id -1 and distance FLT_MAX instead of raising; an
    id of -1 indexes the last row in numpy and writes out of bounds in a sparse matrix.
    """
    bad = (ind < 0).any(axis=1) | ~np.isfinite(dist).all(axis=1)
    if bad.any():
        row = first_query + int(np.flatnonzero(bad)[0])
        raise RuntimeError(
            f"faiss returned no valid neighbours for query row {row} (id -1 or a non-finite "
            "distance); this should not happen after the input checks, please report it with "
            "the data's shape, dtype and value range.")
