"""Loading faiss and placing its indexes: the import, the GPU count, the CPU/GPU choice.

A GPU index is used only when the requested device is CUDA *and* faiss was built with GPU
support; one GPU (``"cuda:N"``) or all of them, with the database sharded across GPUs.
"""

from __future__ import annotations

import os

# faiss GPU k-selection is limited to k (and IVF nprobe) <= 2048; above, search on the CPU.
_GPU_MAX_K = 2048


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


def _resolve_gpu(device, n_search: int) -> int | None:
    """faiss GPU ordinal to use (-1 = all GPUs), or ``None`` for the CPU (also when
    ``n_search``, the largest k-selection the search needs, is beyond the GPU's)."""
    from .._utils import resolve_device

    torch_device = resolve_device(device)
    if torch_device.type != "cuda" or faiss_gpu_count() == 0 or n_search > _GPU_MAX_K:
        return None
    if torch_device.index is None and "LOCAL_RANK" in os.environ:
        # One process per GPU (torchrun): this rank's GPU, not every GPU from every rank.
        from ..distributed import local_device

        return int(local_device().index)
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
