"""The mutable state of one training run of a neural eigenfunction estimator."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..eigenfunctions import ColumnNormalization
from . import _neural_io as io
from ._convergence import PlateauSchedule
from ._pair_sampler import GraphPairSampler

__all__ = ["_TrainingRun"]


@dataclass
class _TrainingRun:
    """Everything that evolves during training (and goes into a checkpoint)."""

    network: nn.Module
    normalizer: ColumnNormalization
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # CPU generator: pairs, batch indices and Gumbel noise
    device: torch.device
    batch_size: int  # pairs (global graph) or points (minibatch graphs) per step
    n_samples: int
    learning_rate: float  # initial learning rate; the schedule scales it
    diffusion_steps: int  # current diffusion time t
    schedule: PlateauSchedule | None = None  # None: constant learning rate (partial_fit)
    sampler: GraphPairSampler | None = None  # None: graphs built inside each minibatch
    step: int = 0
    permutation: torch.Tensor | None = None  # current epoch's sample order (minibatch mode)
    position: int = 0  # next unread entry of ``permutation``
    eigenvalues: torch.Tensor | None = None  # EMA of diag(R) at the current t, shape (K,)
    loss_curve: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    model: nn.Module | None = None  # ``network`` in DDP when distributed (forward only)
    context: Any = None  # per-sample kernel side information (e.g. TokenContext), not saved
    batch_context: Any = None  # ``context`` of the current minibatch's rows
    # Called with the run at each convergence check and at the end of ``fit`` (not saved).
    on_check: Callable[[_TrainingRun], None] | None = None
    reported_step: int | None = None  # step of the last ``on_check`` call
    callback_time: float = 0.0  # seconds spent in ``on_check`` (snapshots and callback)
    # Every rank's (generator state, permutation, position) at the checkpoint a distributed
    # run resumed from; None for one process or an older checkpoint.
    rank_streams: list | None = None

    def frozen_copy(self) -> _TrainingRun:
        """An independent copy of the state, for finishing a snapshot of the run.

        Network, normaliser, optimiser moments, generator, schedule and statistics are
        copied, so finishing the copy (which moves its network to the CPU and, for the
        discrete estimator, trains it further) leaves this run's trajectory untouched.
        The data-side objects (sampler, context) are shared: they are read-only. The copy
        has no checkpoint, no DDP wrapper and no ``on_check``.
        """
        network = copy.deepcopy(self.network)
        optimizer = type(self.optimizer)(network.parameters(), **self.optimizer.defaults)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
        generator = torch.Generator()
        generator.set_state(self.generator.get_state())
        return dataclasses.replace(
            self, network=network, normalizer=copy.deepcopy(self.normalizer),
            optimizer=optimizer, generator=generator, schedule=copy.deepcopy(self.schedule),
            eigenvalues=None if self.eigenvalues is None else self.eigenvalues.clone(),
            loss_curve=list(self.loss_curve), checkpoint=None, model=None, on_check=None,
            reported_step=None, callback_time=0.0)

    def state_dict(self) -> dict:
        return io.to_cpu({
            "step": self.step,
            "network": self.network.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "permutation": self.permutation,
            "position": self.position,
            "eigenvalues": self.eigenvalues,
            "diffusion_steps": self.diffusion_steps,
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "loss_curve": list(self.loss_curve),
        })

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.network.load_state_dict(state["network"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.permutation = state["permutation"]
        self.position = int(state["position"])
        self.eigenvalues = state["eigenvalues"]
        self.diffusion_steps = int(state["diffusion_steps"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.loss_curve = [float(v) for v in state["loss_curve"]]
        self.rank_streams = state.get("rank_streams")


class _Snapshot:
    """Zero-argument callable: the estimator as if training had stopped at one step.

    What a ``callback`` receives. The run's state is copied when the snapshot is made (cheap:
    the network and optimiser state); the fitted copy of the estimator is only computed on
    the first call (a pass over the training data, Rayleigh–Ritz and k-means, or the
    discrete fine-tuning) and then cached.
    """

    def __init__(self, finish: Callable[[_TrainingRun], Any], run: _TrainingRun):
        self._finish = finish
        self._run: _TrainingRun | None = run.frozen_copy()
        self._estimator = None

    def __call__(self):
        if self._run is not None:
            self._estimator = self._finish(self._run)
            self._run = None  # the state now lives in the estimator
        return self._estimator
