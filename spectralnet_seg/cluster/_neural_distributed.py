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

        Each rank's loss and diag(R) come from its own minibatch; their means are the
        statistics of the global batch, so every rank keeps the same eigenvalue EMA. The
        normaliser's running second moments are averaged too (one all-reduce for all three),
        so that what rank 0 checkpoints is every rank's state.
        """
        if dist_utils.get_world_size() == 1:
            return loss, rayleigh
        running = run.normalizer.running_second_moment
        K = rayleigh.numel()
        packed = torch.cat([loss.detach().reshape(1).float(), rayleigh.detach().float(),
                            running.float()])
        mean = dist_utils.all_reduce_mean(packed)
        running.copy_(mean[1 + K:])
        return mean[0].to(loss.dtype), mean[1:1 + K].to(rayleigh.dtype)

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

        The checkpoint holds rank 0's generator and permutation, which the other ranks would
        otherwise replay (drawing rank 0's minibatches). No collective call: a rank that
        found no checkpoint must not be left waiting.
        """
        if dist_utils.get_world_size() == 1:
            return
        restored = int(run.generator.initial_seed())  # rank 0's seed, the same everywhere
        run.generator.manual_seed(dist_utils.seed_for_rank(restored + run.step))
        run.permutation, run.position = None, 0

    def _is_main_process(self) -> bool:
        """Whether this process writes checkpoints: rank 0 (always, without torch.distributed)."""
        return dist_utils.is_main_process()

    def _save_checkpoint(self, run: _TrainingRun) -> None:
        if run.checkpoint is None or not self._is_main_process():
            return
        io.save_checkpoint(run.checkpoint, run.state_dict())
