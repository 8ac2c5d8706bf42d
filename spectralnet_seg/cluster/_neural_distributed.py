"""What the neural estimators' training loop does differently under ``torch.distributed``.

Single-process runs go through the same methods, which then do nothing special: one device,
the plain seed, no all-reduce, and this process writes the checkpoints.
"""

from __future__ import annotations

import torch

from .. import distributed as dist_utils
from .._utils import resolve_device
from . import _neural_io as io
from ._training_run import _TrainingRun

__all__ = ["DistributedTrainingMixin"]


class DistributedTrainingMixin:
    """Device choice, per-rank seeds, statistic all-reduce and rank-0 checkpoints.

    Mixed into
    [`BaseNeuralEigenClustering`][spectralnet_seg.cluster._neural_base.BaseNeuralEigenClustering];
    expects ``device`` and ``checkpoint_dir``-driven ``run.checkpoint`` from it.
    """

    def _sync_statistics(self, run: _TrainingRun, loss: torch.Tensor,
                         rayleigh: torch.Tensor):
        """Average the step's statistics over processes (single process: unchanged).

        Each rank's loss and diag(R) come from its own minibatch; every rank keeps their
        means (close to the statistics of the union of the batches, not equal to them), so
        every rank keeps the same eigenvalue EMA. The
        normaliser's running second moments are averaged too (one all-reduce for all three),
        so that what rank 0 checkpoints is every rank's state.
        """
        if not self._in_lockstep():
            return loss, rayleigh
        running = run.normalizer.running_second_moment
        K = rayleigh.numel()
        packed = torch.cat([loss.detach().reshape(1).float(), rayleigh.detach().float(),
                            running.float()])
        mean = dist_utils.all_reduce_mean(packed)
        running.copy_(mean[1 + K:])
        return mean[0].to(loss.dtype), mean[1:1 + K].to(rayleigh.dtype)

    def _in_lockstep(self) -> bool:
        """Whether this training runs on every rank together (collectives, DDP).

        Not in a callback's snapshot: the docs suggest side work on rank 0 only, and the
        discrete estimator's snapshot fine-tunes, whose all-reduces and DDP set-up then
        waited forever for the other ranks.
        """
        return dist_utils.get_world_size() > 1 and not getattr(self, "_snapshot_copy", False)

    def _lockstep_model(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network`` wrapped in DDP when training in lockstep, else itself."""
        return dist_utils.wrap_ddp(network) if self._in_lockstep() else network

    def _training_device(self) -> torch.device:
        """``device``, joining torchrun's process group first; one GPU per rank."""
        device = resolve_device(self.device)
        # NCCL reduces CUDA tensors only: a CPU fit on a CUDA machine needs gloo.
        dist_utils.init_from_env("auto" if device.type == "cuda" else "gloo")  # torchrun only
        if device.type == "cuda" and device.index is None and dist_utils.get_world_size() > 1:
            device = dist_utils.local_device()
        return device

    @staticmethod
    def _rank_seed(seed: int) -> int:
        """``seed`` on one process; a distinct seed per rank when distributed."""
        return seed if dist_utils.get_world_size() == 1 else dist_utils.seed_for_rank(seed)

    def _rank_streams_after_resume(self, run: _TrainingRun) -> None:
        """After a distributed resume, give each rank its own sampling stream again.

        The checkpoint's own generator and permutation are rank 0's, which the other ranks
        would otherwise replay (drawing rank 0's minibatches). A checkpoint written by a run
        of the same world size holds every rank's stream: each rank continues its own, so a
        resumed run equals an uninterrupted one (with fresh streams, a rerun of a finished
        discrete fit fine-tuned from other draws: 7 of 400 labels differed). Otherwise each
        rank gets a fresh stream. No collective call: a rank that found no checkpoint must
        not be left waiting.
        """
        world = dist_utils.get_world_size()
        if world == 1:
            return
        streams = run.rank_streams
        if streams is not None and len(streams) == world:
            generator, run.permutation, run.position = streams[dist_utils.get_rank()]
            run.generator.set_state(generator)
            run.position = int(run.position)
            return
        restored = int(run.generator.initial_seed())  # rank 0's seed, the same everywhere
        run.generator.manual_seed(dist_utils.seed_for_rank(restored + run.step))
        run.permutation, run.position = None, 0

    #: Fitted attributes that a ``partial_fit`` derives from this rank's own rows and that
    #: the model's predictions or description depend on: every rank takes rank 0's (see
    #: [`_share_rank_zero_state`][_share_rank_zero_state]).
    _RANK_ZERO_STATE: tuple[str, ...] = ("fourier_scale_", "_input_statistics")

    def _check_same_rows_on_every_rank(self, X) -> None:
        """``fit`` trains one model on one data set: refuse ranks that hold different rows.

        Passing each rank its own shard (the usual DDP habit) trained without an error, and
        the ranks' models then disagreed on 337 of 400 predictions.
        """
        if dist_utils.get_world_size() == 1:
            return
        mine = (tuple(X.shape), io.data_checksum(X))
        everyone = dist_utils.all_gather_object(mine)
        if any(other != mine for other in everyone):
            raise ValueError(
                f"fit got different data on the ranks (shapes {[o[0] for o in everyone]}): "
                "under torch.distributed every rank passes the same X (each draws its own "
                "minibatches from it); to split a stream over ranks use partial_fit with "
                "make_loader.")

    def _check_equal_chunks(self, n_rows: int) -> None:
        """``partial_fit`` runs ``ceil(rows / batch)`` collective steps: equal on every rank.

        Chunks of 201 and 199 rows hung the ranks (or closed their connection).
        """
        if dist_utils.get_world_size() == 1:
            return
        everyone = dist_utils.all_gather_object(int(n_rows))
        if len(set(everyone)) > 1:
            raise ValueError(
                f"partial_fit got chunks of {everyone} rows on the ranks: every rank trains "
                "in lockstep, so each call needs the same number of rows on every rank "
                "(make_loader(..., drop_last=True) gives equal chunks).")

    def _share_rank_zero_state(self, X) -> None:
        """After a distributed ``partial_fit``, every rank keeps rank 0's derived state.

        The network is already the same everywhere (DDP), but the settings and the
        post-processing (k-means centres, output map) came from each rank's own chunk:
        the ranks' models disagreed on 362 of 400 predictions.
        """
        if dist_utils.get_world_size() == 1:
            return
        names = [name for name in self._RANK_ZERO_STATE if name in self.__dict__]
        self.__dict__.update(dist_utils.broadcast_object(
            {name: self.__dict__[name] for name in names}))
        self._after_rank_zero_state(X)

    def _after_rank_zero_state(self, X) -> None:
        """Recompute what this rank's rows get from rank 0's state (nothing by default)."""

    def _is_main_process(self) -> bool:
        """Whether this process writes checkpoints: rank 0 (always, without torch.distributed)."""
        return dist_utils.is_main_process()

    def _save_checkpoint(self, run: _TrainingRun) -> None:
        """Rank 0 writes the run's state, with every rank's sampling stream when distributed
        (every rank calls this at the same steps: gathering the streams is collective)."""
        if run.checkpoint is None:
            return
        streams = None
        if self._in_lockstep():
            streams = dist_utils.all_gather_object(
                (run.generator.get_state(), run.permutation, int(run.position)))
        if not self._is_main_process():
            return
        state = run.state_dict()
        if streams is not None:
            state["rank_streams"] = io.to_cpu(streams)
        io.save_checkpoint(run.checkpoint, state)
