"""The plan of a search: shapes and neighbour counts checked, batches sized, memory bounded."""

from __future__ import annotations

from dataclasses import dataclass

from ._index import _default_n_lists
from ._memory import _check_memory, _default_batch_size, estimate_knn_memory


@dataclass(frozen=True)
class _SearchPlan:
    """What [`knn_search`][knn_search] decided before searching (all checked against the data)."""

    n_neighbors: int  # k returned per query
    n_search: int  # k asked of faiss: k + 1 when each query's own index is dropped
    exclude_self: bool
    n_lists: int | None  # IVF lists (None for other indexes)
    batch: int  # queries per batch


def _plan_search(X, Y, n_neighbors: int, *, index: str, exclude_self: bool, batch_size,
                 n_lists, hnsw_m: int, max_memory_bytes, verbose: bool) -> _SearchPlan:
    """Check shapes and neighbour counts against the data, size the batches, bound memory."""
    k = int(n_neighbors)
    if Y.shape[1] != X.shape[1]:
        raise ValueError(f"Y has {Y.shape[1]} features but X has {X.shape[1]}; queries and "
                         "database must have the same number of features.")
    n_db, n_q, d = X.shape[0], Y.shape[0], X.shape[1]
    if exclude_self and n_q != n_db:
        raise ValueError(f"exclude_self=True needs query i to be database row i, but there are "
                         f"{n_q} queries and {n_db} database rows.")
    n_available = n_db - 1 if exclude_self else n_db
    if k > n_available:
        raise ValueError(f"n_neighbors={k} is too large: only {n_available} neighbours exist "
                         f"among {n_db} database points"
                         + (" once each point's own index is excluded" if exclude_self else "")
                         + f"; use n_neighbors <= {n_available}.")
    n_search = k + 1 if exclude_self else k
    if index == "ivf":
        n_lists = _default_n_lists(n_db) if n_lists is None else int(n_lists)
        if n_lists > n_db:
            raise ValueError(f"n_lists={n_lists} exceeds the {n_db} database points; use fewer "
                             "lists or index='flat'.")
    batch = min(batch_size or _default_batch_size(n_q, d, n_search), n_q)
    estimate = estimate_knn_memory(n_db, n_q, d, n_search, index, batch, hnsw_m=hnsw_m,
                                   n_lists=n_lists)
    _check_memory(estimate, max_memory_bytes, verbose,
                  f"{n_q} queries x {n_db} points x {d} dims, k={k}, index={index!r}")
    return _SearchPlan(k, n_search, bool(exclude_self), n_lists, batch)
