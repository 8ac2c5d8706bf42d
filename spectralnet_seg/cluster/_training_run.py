"""The mutable state of one training run of a neural eigenfunction estimator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..eigenfunctions import ColumnNormalization
from . import _neural_io as io

__all__ = ["_TrainingRun"]


@dataclass
class _TrainingRun:
    """Everything that evolves during training (and goes into a checkpoint)."""

    network: nn.Module
    normalizer: ColumnNormalization
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator  # CPU generator: batch indices and Gumbel noise
    device: torch.device
    total_steps: int  # horizon of the learning-rate / temperature schedules
    batch_size: int
    n_samples: int
    step: int = 0
    permutation: torch.Tensor | None = None  # current epoch's sample order
    position: int = 0  # next unread entry of ``permutation``
    eigenvalues: torch.Tensor | None = None  # EMA of diag(R), shape (K,)
    loss_curve: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    model: nn.Module | None = None  # ``network`` in DDP when distributed (forward only)
    context: Any = None  # per-sample kernel side information (e.g. TokenContext), not saved
    batch_context: Any = None  # ``context`` of the current minibatch's rows
    full_batch_operator: torch.Tensor | None = None  # G when every batch is the whole set

    def state_dict(self) -> dict:
        return io.to_cpu({
            "step": self.step,
            "network": self.network.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "permutation": self.permutation,
            "position": self.position,
            "eigenvalues": self.eigenvalues,
            "loss_curve": list(self.loss_curve),
        })

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.network.load_state_dict(state["network"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.permutation = state["permutation"]
        self.position = int(state["position"])
        self.eigenvalues = state["eigenvalues"]
        self.loss_curve = [float(v) for v in state["loss_curve"]]
