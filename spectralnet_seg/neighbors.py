"""k-nearest-neighbour search: the one module of the package that talks to faiss.

Everything faiss-specific lives here: index choice (exact ``IndexFlat``, approximate
``IndexHNSWFlat`` and ``IndexIVFFlat``), float32 / C-contiguous conversion, query batching with
bounded memory, GPU indexes when faiss was built with GPU support (single GPU, or all GPUs
with faiss's own sharding), thread control, and a memory estimate that refuses a job which
would not fit instead of crashing half-way.

>>> import numpy as np
>>> from spectralnet_seg.neighbors import knn_search
>>> X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
>>> dist, ind = knn_search(X, n_neighbors=2)
>>> ind[0].tolist(), dist[0].round(3).tolist()
([1, 2], [1.0, 2.0])
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._numeric import power_of_two_exponent, unit_rows
from ._utils import available_cores, check_finite_rows, progress

__all__ = [
    "KNNMemoryError",
    "available_memory_bytes",
    "estimate_knn_memory",
    "faiss_gpu_count",
    "knn_search",
]

_METRICS = ("l2", "cosine")
_INDEXES = ("flat", "hnsw", "ivf")
# Bytes of per-batch temporaries (query copy, faiss result buffers) the default batch size aims at.
_BATCH_BYTES = 256 * 2**20
# Rows converted at a time when validating / adding the database (bounds the float32 copies).
_CHUNK_BYTES = 64 * 2**20
# Fixed overhead: faiss's BLAS tiles (4096 queries x 1024 database rows), heaps, Python objects.
_OVERHEAD_BYTES = 64 * 2**20
# faiss GPU k-selection is limited to k <= 2048; above that we search on the CPU.
_GPU_MAX_K = 2048
# faiss warns (and clusters badly) with fewer than 39 training points per IVF list.
_MIN_POINTS_PER_LIST = 39
_MAX_POINTS_PER_LIST = 256
# Below ~2e9 multiply-adds (~0.3 s on one core) a job runs single-threaded.
_PARALLEL_WORK = 2e9


class KNNMemoryError(ValueError, MemoryError):
    """A kNN job whose memory estimate exceeds the allowed budget (raised before it starts)."""


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a hard dependency
        raise ImportError(
            "faiss is required for nearest-neighbour search; install it with "
            "`pip install faiss-cpu` (or the `gpu` extra for faiss-gpu)."
        ) from exc
    return faiss


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use; 0 when faiss was built without GPU support."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # CPU builds may lack the symbol or fail to query the driver
        return 0


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


def _default_n_lists(n_database: int) -> int:
    """~4 sqrt(n) inverted lists, with at least 39 training points per list (faiss's minimum)."""
    return int(max(1, min(round(4 * np.sqrt(n_database)), n_database // _MIN_POINTS_PER_LIST)))


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


# ----------------------------------------------------------------------------- validation
def _as_2d(X, name: str) -> np.ndarray:
    """Shape/dtype checks without copying (memory-mapped input stays on disk)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        raise TypeError(f"{name} is a sparse matrix; knn_search needs a dense array "
                        f"(call {name}.toarray() if it fits in memory).")
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor, possibly on a GPU
        X = X.detach().cpu().numpy()
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features), got "
                         f"shape {X.shape}; reshape 1-D data with .reshape(-1, 1).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); at least one sample and one "
                         "feature are required.")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    return X


def _chunk_rows(X: np.ndarray) -> int:
    return max(1, _CHUNK_BYTES // (4 * X.shape[1]))


def _rows_f32(X: np.ndarray, start: int, stop: int, metric: str, name: str,
              offset: int = 0, exponent: int = 0) -> np.ndarray:
    """Rows ``start:stop`` as C-contiguous float32: unit-normalised for the cosine metric,
    divided by ``2**exponent`` (exact, see [`_l2_exponent`][_l2_exponent]) for the L2 metric."""
    rows = np.ascontiguousarray(X[start:stop], dtype=np.float32)
    if metric == "cosine":
        rows, zero = unit_rows(rows)
        if zero.any():
            bad = offset + start + int(np.flatnonzero(zero)[0])
            raise ValueError(f"{name} row {bad} is all zeros; the cosine metric is undefined for "
                             "zero vectors (remove them or use metric='l2').")
    elif exponent:
        rows = np.ldexp(rows, -exponent)
    return rows


def _check_rows(X: np.ndarray, metric: str, name: str) -> float:
    """One streaming pass: finite after float32 conversion, no zero rows for cosine.

    Returns the largest absolute value (what [`_l2_exponent`][_l2_exponent] needs).
    """
    step = _chunk_rows(X)
    max_abs = 0.0
    for start in range(0, X.shape[0], step):
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            rows = np.asarray(X[start:start + step], dtype=np.float32)
        check_finite_rows(rows, offset=start, name=name, note=" (after conversion to float32)")
        if metric == "cosine":
            _rows_f32(rows, 0, rows.shape[0], metric, name, offset=start)
        else:
            max_abs = max(max_abs, float(rows.max()), -float(rows.min()))  # no copy
    return max_abs


def _l2_exponent(max_abs: float, n_features: int) -> int:
    """``e`` such that the L2 search divides the data by ``2**e`` (0 for ordinary magnitudes).

    faiss squares float32 values: beyond ~1e19 the squares overflow (neighbours come back
    as id -1) and below ~1e-19 they vanish (every distance 0). Scaling by a power of two is
    exact, so the neighbours are those of the original data at any scale, as long as the
    distances themselves fit in float32.
    """
    largest_distance = 2.0 * max_abs * np.sqrt(n_features)
    if largest_distance >= np.finfo(np.float32).max:
        raise ValueError(
            f"X's values are too large for float32 distances (largest magnitude {max_abs:.3g}, "
            f"so distances up to ~{largest_distance:.3g}, above float32's "
            f"{float(np.finfo(np.float32).max):.3g}); divide X by a constant first (the kNN "
            "graph does not change) or use metric='cosine'.")
    return power_of_two_exponent(max_abs)


# ----------------------------------------------------------------------------- faiss plumbing
def _search_work(n_db: int, n_q: int, d: int, index: str, n_lists, n_probe: int,
                 ef_search: int, hnsw_m: int) -> float:
    """Rough multiply-adds of a job, to decide whether threads are worth starting."""
    if index == "flat":
        return float(n_q) * n_db * d
    if index == "ivf":
        n_train = min(n_db, _MAX_POINTS_PER_LIST * n_lists)
        return float(d) * (n_q * (n_probe / n_lists * n_db + n_lists) + 10 * n_train * n_lists)
    # HNSW: build and search visit ~ef candidates with M links each (calibrated against flat).
    return float(n_db + n_q) * d * 4 * max(ef_search, 40) * hnsw_m


@contextlib.contextmanager
def _faiss_threads(faiss, n_threads: int | None, work: float):
    """Run faiss with a sensible number of OpenMP threads, restoring the setting afterwards.

    At most the cores this process may run on (faiss's OpenMP otherwise uses every core of the
    machine, oversubscribing CPU-limited containers; ``OMP_NUM_THREADS`` is still honoured),
    and a single thread for small jobs, where spinning threads up costs more than it saves and
    busy-waiting OpenMP threads slow everything down on a shared machine.
    """
    previous = faiss.omp_get_max_threads()
    if n_threads is None:
        n_threads = 1 if work < _PARALLEL_WORK else min(previous, available_cores())
    faiss.omp_set_num_threads(max(1, n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _resolve_gpu(device, n_search: int) -> int | None:
    """faiss GPU ordinal to use (-1 = all GPUs), or ``None`` for the CPU."""
    from ._utils import resolve_device

    torch_device = resolve_device(device)
    if torch_device.type != "cuda" or faiss_gpu_count() == 0 or n_search > _GPU_MAX_K:
        return None
    return -1 if torch_device.index is None else int(torch_device.index)


def _to_gpu(faiss, cpu_index, gpu: int):
    if gpu == -1:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = faiss_gpu_count() > 1  # split the database across GPUs, not replicate it
        return faiss.index_cpu_to_all_gpus(cpu_index, co=options)
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, gpu, cpu_index)
    gpu_index.referenced_objects = [resources]  # keep the resources alive with the index
    return gpu_index


def _build_index(faiss, X, metric, index, gpu, hnsw_m, ef_search, n_lists, n_probe,
                 random_state, n_search, exponent=0):
    d = X.shape[1]
    n = X.shape[0]
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
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
        built.train(_rows_f32(X[train_ids], 0, n_train, metric, "X", exponent=exponent))
        if clustering is not None:
            built.clustering_index = None
    if gpu is not None:
        built = _to_gpu(faiss, built, gpu)
    step = _chunk_rows(X)
    for start in range(0, n, step):
        built.add(_rows_f32(X, start, start + step, metric, "X", exponent=exponent))
    return built


def _exact_rows(faiss, X, queries, k, metric, exponent=0):
    """Exact search of a few queries, streaming over the database (fallback for -1 results)."""
    heap = faiss.ResultHeap(queries.shape[0], k, keep_max=metric == "cosine")
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    step = _chunk_rows(X)
    for start in range(0, X.shape[0], step):
        block = _rows_f32(X, start, start + step, metric, "X", exponent=exponent)
        kb = min(k, block.shape[0])
        dist, ind = faiss.knn(queries, block, kb, metric=faiss_metric)
        if kb < k:
            dist = np.pad(dist, ((0, 0), (0, k - kb)),
                          constant_values=-np.inf if metric == "cosine" else np.inf)
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


# ----------------------------------------------------------------------------- public search
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
        "hnsw_m": _POSITIVE,
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
        Database. A ``numpy.memmap`` is read in chunks (it is never copied whole).
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
        across them), ``"cuda:N"`` one. Otherwise the search runs on the CPU.
    batch_size : int, optional
        Queries per batch; by default chosen to keep per-batch temporaries near 256 MiB.
    exclude_self : bool, optional
        Drop each query's own index (query ``i`` is database row ``i``). Defaults to ``True``
        when ``Y is None``, else ``False``. With duplicate points the query itself may not come
        first: its own index is removed wherever it is, else the farthest neighbour is dropped.
    hnsw_m : int, default=32
        HNSW links per node.
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
    max_abs = _check_rows(X, metric, "X")
    if not queries_are_database:
        max_abs = max(max_abs, _check_rows(Y, metric, "Y"))
    exponent = _l2_exponent(max_abs, X.shape[1]) if metric == "l2" else 0

    faiss = _faiss()
    gpu = _resolve_gpu(device, plan.n_search)
    work = _search_work(X.shape[0], Y.shape[0], X.shape[1], index, plan.n_lists, n_probe,
                        ef_search, hnsw_m)
    with _faiss_threads(faiss, n_threads, work):
        built = _build_index(faiss, X, metric, index, gpu, hnsw_m, ef_search, plan.n_lists,
                             n_probe, random_state, plan.n_search, exponent)
        return _search_batches(faiss, built, X, Y, plan, metric, exponent, verbose)


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


def _search_batches(faiss, built, X, Y, plan: _SearchPlan, metric: str, exponent: int,
                    verbose: bool) -> tuple[np.ndarray, np.ndarray]:
    """Search the queries in batches; distances as documented in [`knn_search`][knn_search]."""
    n_q = Y.shape[0]
    distances = np.empty((n_q, plan.n_neighbors), dtype=np.float32)
    indices = np.empty((n_q, plan.n_neighbors), dtype=np.int64)
    starts = range(0, n_q, plan.batch)
    for start in progress(starts, verbose=verbose, desc="kNN search", total=len(starts)):
        stop = min(start + plan.batch, n_q)
        queries = _rows_f32(Y, start, stop, metric, "Y", exponent=exponent)
        dist, ind = built.search(queries, plan.n_search)
        missing = (ind < 0).any(axis=1)
        if missing.any():  # approximate index found too few candidates for these rows
            dist[missing], ind[missing] = _exact_rows(faiss, X, queries[missing],
                                                      plan.n_search, metric, exponent)
        _check_results(dist, ind, start)
        if metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0.0))
            if exponent:
                dist = np.ldexp(dist, exponent)
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
