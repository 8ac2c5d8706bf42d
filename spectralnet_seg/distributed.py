"""Thin helpers over ``torch.distributed`` for training on several processes.

Everything here is a no-op (or returns the single-process answer) when no process group is
initialised, so code written with these helpers runs unchanged on one process, under
``torchrun`` on one node, and across nodes:

>>> from spectralnet_seg.distributed import get_rank, get_world_size, is_main_process
>>> get_rank(), get_world_size(), is_main_process()
(0, 1, True)

The launch is ``torchrun``'s job: it sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; [`init_from_env`][init_from_env] reads them.
[`run_local`][run_local]
starts the same environment on one machine without ``torchrun`` (tests, notebooks).
"""

from __future__ import annotations

import functools
import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from sklearn.utils import check_random_state

F = TypeVar("F", bound=Callable[..., Any])

_BACKENDS = ("auto", "nccl", "gloo", "mpi")
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Odd 32-bit constant (golden ratio): rank -> base + rank * C is a bijection modulo 2**32,
# so per-rank seeds are distinct for every rank, not just distinct with high probability.
_RANK_STRIDE = 0x9E3779B1


# ---------------------------------------------------------------------------- queries
def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    """Rank of this process on its node, from ``LOCAL_RANK`` (set by ``torchrun``); else 0."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on global rank 0, the process that writes checkpoints, logs and results."""
    return get_rank() == 0


def local_device() -> torch.device:
    """The device this rank should train on: ``cuda:LOCAL_RANK`` when CUDA is available.

    One GPU per process is the DDP convention; without CUDA every rank uses the CPU.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", get_local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


# ---------------------------------------------------------------------------- setup
def _resolve_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; use one of {list(_BACKENDS)}.")
    if backend == "auto":
        cuda_ok = torch.cuda.is_available() and dist.is_nccl_available()
        return "nccl" if cuda_ok else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend='nccl' needs CUDA, which is not available here; "
                         "use backend='gloo' (or 'auto') on CPU.")
    return backend


def init_from_env(backend: str = "auto", *, timeout: float | None = None) -> bool:
    """Initialise the default process group from ``torchrun``'s environment variables.

    Does nothing (and returns False) when the process was not launched by ``torchrun`` (no
    ``RANK``/``WORLD_SIZE`` in the environment); returns True when a group is (already)
    initialised, so calling it twice is harmless.

    Parameters
    ----------
    backend : {"auto", "nccl", "gloo", "mpi"}, default="auto"
        ``"auto"`` picks NCCL when CUDA is available, gloo otherwise.
    timeout : float, optional
        Seconds collectives may wait before failing (torch's default when None).

    Returns
    -------
    bool
        Whether this process now belongs to a process group.

    Raises
    ------
    ValueError
        Unknown backend, NCCL without CUDA or with more processes on this node than GPUs
        (``LOCAL_WORLD_SIZE``), or an incomplete torchrun environment.
    """
    backend = _resolve_backend(backend)
    if is_distributed():
        return True
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return False
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ValueError(
            f"the environment looks like a distributed launch but lacks {missing}; "
            "start the script with torchrun (which sets RANK, WORLD_SIZE, MASTER_ADDR and "
            "MASTER_PORT) or unset RANK/WORLD_SIZE to run on one process."
        )
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed support.")
    if backend == "nccl":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", get_local_rank() + 1))
        # One visible GPU per process is the CUDA_VISIBLE_DEVICES-per-rank setup (SLURM,
        # Kubernetes); several visible GPUs shared by more processes would repeat one.
        if 1 < torch.cuda.device_count() < local_world:
            raise ValueError(
                f"backend='nccl' needs one GPU per process, but {local_world} processes on "
                f"this node share {torch.cuda.device_count()} GPU(s); start at most that "
                "many processes per node, or use backend='gloo'.")
        # NCCL binds each rank to the current CUDA device; set it before the first collective.
        torch.cuda.set_device(local_device())
    kwargs = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return True


def cleanup() -> None:
    """Destroy the default process group if there is one (call at the end of a script)."""
    if is_distributed():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- collectives
def barrier() -> None:
    """Wait until every rank reaches this point (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks, as a new tensor (the input is left unchanged).

    With NCCL the tensor must live on this rank's GPU; with gloo on the CPU.
    """
    out = tensor.detach().clone()
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks, as a new floating tensor.

    Used to synchronise running statistics (second moments, eigenvalue EMAs) so that every
    rank normalises with the same numbers. Integer input is averaged in float32.
    """
    if not tensor.is_floating_point():
        tensor = tensor.float()
    return all_reduce_sum(tensor) / get_world_size()


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Return ``obj`` as held by rank ``src`` on every rank (any picklable object)."""
    if not is_distributed() or get_world_size() == 1:
        return obj
    box = [obj]
    # NCCL moves the pickled bytes through the current GPU; gloo through the CPU.
    device = local_device() if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a group)."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered: list = [None] * get_world_size()
    if dist.get_backend() == "nccl":  # the pickled bytes travel through the current GPU
        torch.cuda.set_device(local_device())
    dist.all_gather_object(gathered, obj)
    return gathered


def rank_zero_only(fn: F) -> F:
    """Decorator: run ``fn`` on the main process only; other ranks get None.

    For side effects that must happen once (writing a checkpoint, printing a summary).
    It does not synchronise: follow it with [`barrier`][barrier] when others read what it wrote.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if is_main_process():
            return fn(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------- seeds
def _base_seed(random_state) -> int:
    return int(check_random_state(random_state).randint(0, np.iinfo(np.int32).max))


def seed_for_rank(random_state, rank: int | None = None) -> int:
    """A reproducible seed for ``rank``'s own randomness (minibatch sampling, noise).

    The same ``random_state`` gives the same seed for a given rank on every run, and
    different ranks always get different seeds, so ranks draw different minibatches.
    Parameters that must agree across ranks (initial weights, a shared data permutation)
    should use [`shared_seed`][shared_seed] instead.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        Seed source, as in scikit-learn. None gives fresh, irreproducible seeds.
    rank : int, optional
        Rank to derive the seed for; this process's rank by default.

    Returns
    -------
    int
        Seed in ``[0, 2**32)``, valid for numpy and torch.

    Examples
    --------
    >>> seed_for_rank(0, rank=0) != seed_for_rank(0, rank=1)
    True
    >>> seed_for_rank(0, rank=1) == seed_for_rank(0, rank=1)
    True
    """
    rank = get_rank() if rank is None else int(rank)
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}.")
    # Hash the base seed first so that nearby random_state values do not give
    # overlapping rank sequences (random_state=0 rank 1 vs random_state=1 rank 0).
    mixed = int(np.random.SeedSequence(_base_seed(random_state)).generate_state(1)[0])
    return (mixed + rank * _RANK_STRIDE) % 2**32


def shared_seed(random_state) -> int:
    """A seed that is identical on every rank: rank 0 draws it and broadcasts it.

    This is a collective call when distributed: every rank must call it.
    """
    return int(broadcast_object(_base_seed(random_state), src=0))


# ---------------------------------------------------------------------------- models
def wrap_ddp(module: torch.nn.Module, **ddp_kwargs) -> torch.nn.Module:
    """Wrap ``module`` in DistributedDataParallel when distributed with more than one rank.

    The module must already be on [`local_device`][local_device]. Returns ``module`` unchanged on
    one
    process, so training code can call it unconditionally.
    """
    if not is_distributed() or get_world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index])
    return DistributedDataParallel(module, **ddp_kwargs)


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (what gets saved in a checkpoint)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


# ---------------------------------------------------------------------------- local launch
def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_worker(local_rank: int, fn, args, world_size: int, port: int, backend: str,
                  result_dir: str) -> None:
    # Mirror what torchrun sets so fn sees the same environment as under a real launch.
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    init_from_env(backend)
    try:
        result = fn(*args)
        with open(Path(result_dir) / f"rank{local_rank}.pkl", "wb") as fh:
            pickle.dump(result, fh)
    finally:
        cleanup()


def run_local(fn: Callable[..., Any], world_size: int, args: tuple = (), *,
              backend: str = "gloo") -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` local processes joined in one process group.

    A single-machine stand-in for ``torchrun`` (tests, notebooks): rank ``r`` runs with
    ``RANK=LOCAL_RANK=r``, and the group is initialised with ``backend`` before ``fn`` is
    called. Processes come from a ``forkserver`` that has imported torch once (so later
    calls start in well under a second, and nothing is forked from a process whose
    thread pools are running); where there is no forkserver (Windows), from ``spawn``.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function; its return value must be picklable.
    world_size : int
        Number of processes.
    args : tuple, default=()
        Positional arguments for ``fn``.
    backend : {"gloo", "nccl", "auto"}, default="gloo"
        Process-group backend.

    Returns
    -------
    list
        ``fn``'s return value on each rank, in rank order.

    Raises
    ------
    torch.multiprocessing.ProcessRaisedException
        With the child's traceback, when ``fn`` raises on any rank.
    """
    import multiprocessing

    import torch.multiprocessing as mp

    if int(world_size) < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    _resolve_backend(backend)
    with tempfile.TemporaryDirectory(prefix="spectralnet_run_local_") as result_dir:
        # Results go through files, not a queue: a large result in a pipe would block the
        # child on exit while the parent waits in join.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
            else "spawn"
        if method == "forkserver":  # only takes effect when the server is first started
            preload = ["torch", __name__]
            if getattr(fn, "__module__", "__main__") != "__main__":
                preload.append(fn.__module__)  # children then start with fn imported
            multiprocessing.get_context(method).set_forkserver_preload(preload)
        mp.start_processes(_local_worker, nprocs=world_size, join=True, start_method=method,
                           args=(fn, args, world_size, find_free_port(), backend, result_dir))
        results = []
        for rank in range(world_size):
            with open(Path(result_dir) / f"rank{rank}.pkl", "rb") as fh:
                results.append(pickle.load(fh))
    return results
