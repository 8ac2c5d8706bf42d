"""[`knn_search`][knn_search], the public entry point: validate, plan, build the index, search."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._backend import _faiss, _resolve_gpu
from ._batches import _search_batches
from ._index import _INDEXES, _build_index
from ._plan import _plan_search
from ._rows import _as_2d, _check_rows, faiss_rows
from ._threads import _faiss_threads, _search_work

_METRICS = ("l2", "cosine")
_POSITIVE = [Interval(Integral, 1, None, closed="left")]


@validate_params(
    {
        "X": ["array-like"],
        "Y": ["array-like", None],
        "n_neighbors": _POSITIVE,
        "metric": [StrOptions(set(_METRICS))],
        "index": [StrOptions(set(_INDEXES))],
        "device": [str],
        "batch_size": [*_POSITIVE, None],
        "exclude_self": ["boolean", None],
        "hnsw_m": [Interval(Integral, 2, None, closed="left")],  # faiss segfaults at 1
        "ef_search": _POSITIVE,
        "n_lists": [*_POSITIVE, None],
        "n_probe": _POSITIVE,
        "max_memory_bytes": [Interval(Real, 0, None, closed="left"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_threads": [*_POSITIVE, None],
    },
    prefer_skip_nested_validation=True,
)
def knn_search(X, Y=None, *, n_neighbors: int, metric: str = "l2", index: str = "flat",
               device: str = "auto", batch_size: int | None = None,
               exclude_self: bool | None = None, hnsw_m: int = 32, ef_search: int = 128,
               n_lists: int | None = None, n_probe: int = 16,
               max_memory_bytes: int | None = None, random_state=None,
               verbose: bool = False, n_threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of each row of ``Y`` (queries) among the rows of ``X`` (database).

    Parameters
    ----------
    X : array-like of shape (n_database, n_features)
        Database. A ``numpy.memmap`` is read in chunks (it is never copied whole). faiss
        searches float32 rows; rows whose mean is more than 8x their spread (with the cosine
        metric: unit rows sharing one direction) are centred first, in float64, because
        faiss's float32 ``|x|^2 + |y|^2 - 2xy`` would cancel such an offset away (the
        distances do not change; centred unit rows are compared by ``|u - v|^2 / 2``).
    Y : array-like of shape (n_queries, n_features), optional
        Queries; ``None`` means ``Y = X``.
    n_neighbors : int
        Neighbours per query (after excluding self). At most ``n_database``, or
        ``n_database - 1`` when excluding self.
    metric : {"l2", "cosine"}, default="l2"
        ``"l2"`` returns Euclidean distances (not squared); ``"cosine"`` returns
        ``1 - cosine similarity`` (rows are unit-normalised internally; zero rows are an error).
    index : {"flat", "hnsw", "ivf"}, default="flat"
        ``"flat"`` is exact; ``"hnsw"`` (``IndexHNSWFlat``, CPU only) and ``"ivf"``
        (``IndexIVFFlat`` trained on a seeded subsample) are approximate and scale to millions
        of points. Queries an approximate index answers with fewer than ``n_neighbors`` results
        are searched again exactly.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        A GPU index is used when this resolves to CUDA *and* faiss has GPU support
        (``faiss_gpu_count``); ``"cuda"`` / ``"auto"`` use all GPUs (database sharded
        across them; under ``torchrun``, where ``LOCAL_RANK`` is set, the rank's own GPU),
        ``"cuda:N"`` one. Otherwise, and when ``n_neighbors`` or an IVF ``n_probe`` exceeds
        faiss's GPU limit of 2048, the search runs on the CPU.
    batch_size : int, optional
        Queries per batch; by default chosen to keep per-batch temporaries near 256 MiB.
    exclude_self : bool, optional
        Drop each query's own index (query ``i`` is database row ``i``). Defaults to ``True``
        when ``Y is None``, else ``False``. With duplicate points the query itself may not come
        first: its own index is removed wherever it is, else the farthest neighbour is dropped.
    hnsw_m : int, default=32
        HNSW links per node (at least 2).
    ef_search : int, default=128
        HNSW search breadth (raised to ``n_neighbors`` + 1 when smaller).
    n_lists : int, optional
        IVF inverted lists; default ``~4 sqrt(n_database)`` with >= 39 training points per list.
    n_probe : int, default=16
        IVF lists visited per query.
    max_memory_bytes : int, optional
        Refuse jobs whose [`estimate_knn_memory`][estimate_knn_memory] exceeds this; default: the
        memory
        available to the process ([`available_memory_bytes`][available_memory_bytes]).
    random_state : int, RandomState instance or None, default=None
        Seeds the IVF training subsample and k-means.
    verbose : bool, default=False
        Print the memory estimate and show a progress bar over query batches.
    n_threads : int, optional
        faiss CPU threads; by default one for small jobs, else the cores available to the
        process (``OMP_NUM_THREADS`` caps it). faiss's setting is restored afterwards.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_neighbors), float32
        Ascending per row.
    indices : ndarray of shape (n_queries, n_neighbors), int64
        Row indices into ``X``.

    Raises
    ------
    KNNMemoryError
        (a ``ValueError`` and ``MemoryError``) when the estimate exceeds the budget.
    ValueError
        On NaN/inf, empty or 1-D input, mismatched feature dimensions, too many neighbours,
        or zero rows with the cosine metric; parameters of the wrong type or range raise
        scikit-learn's ``InvalidParameterError`` (a ``ValueError``).
    """
    X = _as_2d(X, "X")
    queries_are_database = Y is None
    Y = X if queries_are_database else _as_2d(Y, "Y")
    plan = _plan_search(X, Y, n_neighbors, index=index,
                        exclude_self=queries_are_database if exclude_self is None else exclude_self,
                        batch_size=batch_size, n_lists=n_lists, hnsw_m=hnsw_m,
                        max_memory_bytes=max_memory_bytes, verbose=verbose)
    statistics = _check_rows(X, metric, "X")
    if not queries_are_database:
        statistics = _check_rows(Y, metric, "Y").merged(statistics)
    rescaling = faiss_rows(statistics, metric)

    faiss = _faiss()
    # faiss's GPU k-selection bounds both k and an IVF index's nprobe.
    selection = max(plan.n_search, min(n_probe, plan.n_lists) if index == "ivf" else 0)
    gpu = _resolve_gpu(device, selection)
    work = _search_work(X.shape[0], Y.shape[0], X.shape[1], index, plan.n_lists, n_probe,
                        ef_search, hnsw_m)
    with _faiss_threads(faiss, n_threads, work):
        built = _build_index(faiss, X, metric, index, gpu, hnsw_m, ef_search, plan.n_lists,
                             n_probe, random_state, plan.n_search, rescaling)
        return _search_batches(faiss, built, X, Y, plan, metric, rescaling, verbose,
                               check_cancellation=index == "flat")
