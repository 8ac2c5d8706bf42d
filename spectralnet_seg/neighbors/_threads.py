"""faiss's OpenMP threads: how much work a job is, and how many threads it gets."""

from __future__ import annotations

import contextlib

from .._utils import available_cores
from ._index import _MAX_POINTS_PER_LIST

# Below ~2e9 multiply-adds (~0.3 s on one core) a job runs single-threaded.
_PARALLEL_WORK = 2e9


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
