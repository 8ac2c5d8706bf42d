"""The mutable state of one training run of a neural eigenfunction estimator."""

from __future__ import annotations

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
