"""Minibatches from a [`FeatureSource`][spectralnet_seg.data.FeatureSource] through a DataLoader.

The DataLoader here batches by *index arrays*: a sampler yields the row numbers of one
batch and the dataset gathers them with one [`FeatureSource.take`][FeatureSource.take], instead of
one
``__getitem__`` per row and a collate. Workers then fetch whole batches in parallel.

The sampler is written here rather than taken from ``torch.utils.data`` because torch's
``RandomSampler`` and ``DistributedSampler`` materialise each epoch's permutation as a Python
list (about 36 bytes a row: 1.8 GB for 50 million tokens, per rank); this one keeps it as an
int64 tensor (8 bytes a row) and has the same semantics: one shared permutation per epoch,
split into disjoint strided parts across ranks.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import distributed as dist_utils
from .convert import as_feature_source
from .sources import FeatureSource, _check_positive_int


class RowBatchSampler(Sampler):
    """Yields the row numbers of each minibatch, as int64 arrays of shape (batch_size,).

    Each pass draws a new permutation from ``(seed, epoch)`` and then increments the epoch,
    so successive passes differ while a rerun with the same seed repeats them. With
    ``world_size > 1`` every rank must use the same seed: rank ``r`` takes positions
    ``r, r + world_size, ...`` of the shared permutation, so ranks never draw the same row
    in one epoch.

    Parameters
    ----------
    n_samples : int
        Rows in the source.
    batch_size : int
        Rows per batch (per rank).
    shuffle : bool, default=True
        Random order; otherwise rows in order (strided across ranks).
    drop_last : bool, default=True
        Drop the last incomplete batch, and the rows that would make the ranks uneven.
        When False the ranks are evened out by repeating the first rows.
    seed : int, default=0
        Seed of the permutations.
    rank, world_size : int, default=0, 1
        This process's part of the data.
    """

    def __init__(self, n_samples: int, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n_samples = _check_positive_int(n_samples, "n_samples")
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.world_size = _check_positive_int(world_size, "world_size")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside [0, world_size={world_size}).")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed, self.rank, self.epoch = int(seed), int(rank), 0
        if len(self) == 0:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {self.rows_per_rank} rows each "
                f"of the {world_size} process(es) gets, so drop_last=True leaves no batch; "
                "use a smaller batch_size or drop_last=False."
            )

    @property
    def rows_per_rank(self) -> int:
        if self.drop_last:
            return self.n_samples // self.world_size
        return math.ceil(self.n_samples / self.world_size)

    def __len__(self) -> int:
        rows = self.rows_per_rank
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` on the next pass."""
        self.epoch = int(epoch)

    def _rank_rows(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n_samples, generator=gen)
        else:
            order = torch.arange(self.n_samples)
        total = self.rows_per_rank * self.world_size
        if total > self.n_samples:  # even the ranks out by wrapping around
            order = order.repeat(math.ceil(total / self.n_samples))
        return order[:total][self.rank::self.world_size]

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        rows = self._rank_rows(epoch)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.numpy()


class _BatchDataset(Dataset):
    """Maps an index array to the float32 tensor of those rows (and the indices)."""

    def __init__(self, source: FeatureSource, return_indices: bool):
        self.source = source
        self.return_indices = return_indices

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices):
        # The source's own rules: a boolean mask selects its True rows, floats are refused
        # (a cast to int64 read a mask as rows 0/1 and 0.5 as row 0).
        indices = self.source._normalize_indices(indices)
        rows = torch.from_numpy(self.source.take(indices))
        return (torch.from_numpy(indices), rows) if self.return_indices else rows


def _seed_from(random_state, generator, distributed: bool) -> int:
    if generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    else:
        seed = int(check_random_state(random_state).randint(0, np.iinfo(np.int32).max))
    # Ranks must split one permutation: everyone uses rank 0's seed (a collective call).
    return int(dist_utils.broadcast_object(seed)) if distributed else seed


@validate_params(
    {
        "source": "no_validation",  # as_feature_source says what it accepts
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "drop_last": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "pin_memory": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "generator": [torch.Generator, None],
        "distributed": ["boolean", None],
        "return_indices": ["boolean"],
        "batch_sampler": "no_validation",  # any iterable of index arrays
    },
    prefer_skip_nested_validation=True,
)
def make_loader(source, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
                num_workers: int = 0, pin_memory: bool | str = "auto", random_state=None,
                generator: torch.Generator | None = None, distributed: bool | None = None,
                return_indices: bool = False, batch_sampler: Sampler | None = None,
                **loader_kwargs) -> DataLoader:
    """A DataLoader of float32 minibatches ``(batch_size, n_features)`` from ``source``.

    Parameters
    ----------
    source : FeatureSource or anything [`as_feature_source`][as_feature_source] accepts
        The features (array, memmap, shard directory, Dataset, ...).
    batch_size : int
        Rows per batch, per process: the global batch is ``batch_size * world_size``.
    shuffle : bool, default=True
        Random rows each epoch; in order otherwise.
    drop_last : bool, default=True
        Keep all batches the same size (see [`RowBatchSampler`][RowBatchSampler]).
    num_workers : int, default=0
        Worker processes gathering batches in parallel (0: in this process).
    pin_memory : bool or "auto", default="auto"
        Page-locked batches for faster host-to-GPU copies; "auto" pins when CUDA is
        available.
    random_state : int, RandomState instance or None, default=None
        Seed of the row permutations. Under torch.distributed, rank 0's seed is used on
        every rank so that the ranks split one permutation.
    generator : torch.Generator, optional
        Alternative seed source (one draw from it), instead of ``random_state``.
    distributed : bool, optional
        Split rows across ranks; default: when a process group is initialised.
    return_indices : bool, default=False
        Yield ``(indices, rows)`` pairs (int64 tensor of shape (b,), float32 (b, d)), for
        callers that need side data of the same rows (colours, positions, image ids).
    batch_sampler : Sampler, optional
        Yields index arrays, replacing the built-in sampler (e.g. all rows of a few images
        per batch). ``shuffle``, ``drop_last``, seeds and ``distributed`` are then ignored.
    **loader_kwargs
        Passed on to ``torch.utils.data.DataLoader`` (``persistent_workers``,
        ``prefetch_factor``, ``timeout``, ...).

    Returns
    -------
    torch.utils.data.DataLoader
        Each pass is a new epoch (new permutation); ``len(loader)`` is the number of batches.

    Examples
    --------
    >>> import numpy as np
    >>> loader = make_loader(np.ones((10, 3)), batch_size=4, random_state=0)
    >>> [tuple(b.shape) for b in loader]
    [(4, 3), (4, 3)]
    """
    source = as_feature_source(source)
    num_workers = int(num_workers)
    if pin_memory == "auto":
        pin_memory = torch.cuda.is_available()
    if batch_sampler is None:
        if distributed is None:
            distributed = dist_utils.is_distributed()
        elif distributed and not dist_utils.is_distributed():
            # Silently unsplit, every rank would read every row.
            raise ValueError("distributed=True needs an initialised torch.distributed process "
                             "group (torch.distributed.init_process_group, e.g. under "
                             "torchrun); leave it None to split only when there is one.")
        rank, world = (dist_utils.get_rank(), dist_utils.get_world_size()) if distributed \
            else (0, 1)
        batch_sampler = RowBatchSampler(len(source), batch_size, shuffle=shuffle,
                                        drop_last=drop_last,
                                        seed=_seed_from(random_state, generator,
                                                        distributed),
                                        rank=rank, world_size=world)
    # batch_size=None: the sampler already yields whole batches, so no collate is needed.
    return DataLoader(_BatchDataset(source, return_indices), batch_size=None,
                      sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      **loader_kwargs)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make ``loader``'s next pass use the permutation of ``epoch`` (e.g. after a resume)."""
    sampler = loader.sampler
    if not hasattr(sampler, "set_epoch"):
        raise TypeError(f"the loader's sampler ({type(sampler).__name__}) has no set_epoch.")
    sampler.set_epoch(epoch)
