"""The training loop of the neural estimators.

Each step estimates the Rayleigh matrix R of the network's outputs on the kernel's graph —
from pairs drawn from the global graph ([`GraphPairSampler`][GraphPairSampler]), or exactly
on a graph built inside the minibatch — and takes one optimiser step on the NeuralEF
objective. Every ``CHECK_EVERY`` steps the running eigenvalue estimates set the diffusion
time and feed the plateau test of the learning-rate schedule
([`PlateauSchedule`][spectralnet_seg.cluster._convergence.PlateauSchedule]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._utils import progress
from ..eigenfunctions import (
    diffusion_eigenvalues,
    eigenvalues_from_diffusion,
    graph_rayleigh_matrices,
    neuralef_objective,
    pair_rayleigh_matrices,
)
from . import _neural_io as io
from ._convergence import diffusion_steps_for
from ._training_run import _TrainingRun

#: Steps between two looks at the eigenvalue estimates (plateau test, diffusion time).
CHECK_EVERY = 100
#: Momentum of the running estimate of diag(R).
_EIGENVALUE_MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainingObjective:
    """How raw network outputs enter the NeuralEF objective in one training phase."""

    orthogonality_weight: float
    normalize_penalty: bool
    stop_gradient: bool


class TrainingLoopMixin:
    """The training loop of
    [`BaseNeuralEigenClustering`][spectralnet_seg.cluster._neural_base.BaseNeuralEigenClustering]."""

    def _orthogonality_weight(self, objective: TrainingObjective) -> float:
        if self.orthogonality_weight is None:
            return objective.orthogonality_weight
        return float(self.orthogonality_weight)

    def _train(self, run: _TrainingRun, X, *, n_steps: int | None = None) -> None:
        """Train until the schedule ends (``fit``) or for ``n_steps`` steps (``partial_fit``)."""
        run.network.train()
        run.normalizer.train()
        objective = self._objective()
        last = run.step + n_steps if n_steps is not None else None
        total = n_steps if n_steps is not None else run.schedule.max_iter
        resumed = run.step if n_steps is None else 0  # a fit resumed from a checkpoint
        # A fit's bar stays on screen (steps, time, last loss); partial_fit's calls do not.
        bar = progress(None, verbose=self.verbose, total=total, initial=resumed,
                       leave=n_steps is None,
                       desc=f"{type(self).__name__} training"
                            + (f" (resumed at step {resumed})" if resumed else ""))
        try:
            while not (run.step >= last if last is not None else run.schedule.is_done(run.step)):
                loss, rayleigh = self._train_step(run, X, objective)
                loss, rayleigh = self._sync_statistics(run, loss, rayleigh)
                self._update_statistics(run, loss, rayleigh)
                run.step += 1
                checked = False
                if run.schedule is not None:
                    checked = self._check_progress(run)
                    factor = run.schedule.learning_rate_factor(run.step)
                    for group in run.optimizer.param_groups:
                        group["lr"] = run.learning_rate * factor
                if bar is not None:
                    bar.update(1)
                    if run.step % 10 == 0:
                        bar.set_postfix(loss=f"{run.loss_curve[-1]:.4f}", t=run.diffusion_steps)
                if run.checkpoint is not None and run.step % self.checkpoint_every == 0:
                    self._save_checkpoint(run)
                if checked and run.on_check is not None:
                    run.on_check(run)
            if run.checkpoint is not None and run.step % self.checkpoint_every:
                self._save_checkpoint(run)  # the final state, unless just saved
        finally:
            if bar is not None:
                bar.close()

    def _check_progress(self, run: _TrainingRun) -> bool:
        """At a check: eigenvalues from the EMA, new diffusion time, plateau test.

        Returns whether ``run.step`` was a check.
        """
        if not run.schedule.is_check(run.step):
            return False
        eigenvalues = np.sort(eigenvalues_from_diffusion(run.eigenvalues,
                                                         run.diffusion_steps))[::-1]
        if self.diffusion_steps == "auto":
            steps = diffusion_steps_for(self._diffusion_reference(eigenvalues))
            if steps != run.diffusion_steps:
                # Re-express the running estimate on the new diffusion time.
                order = np.argsort(np.argsort(-run.eigenvalues.numpy()))
                run.eigenvalues = torch.as_tensor(
                    diffusion_eigenvalues(eigenvalues[order], steps))
                run.diffusion_steps = steps
        run.schedule.update(run.step, eigenvalues, run.diffusion_steps)
        return True

    def _diffusion_reference(self, eigenvalues: np.ndarray) -> float:
        """The eigenvalue that sets the diffusion time: the K-th largest estimate."""
        return float(eigenvalues[-1])

    def _train_step(self, run: _TrainingRun, X, objective: TrainingObjective):
        """One optimisation step; returns (loss, diag(R)) detached."""
        model = run.model if run.model is not None else run.network
        if run.sampler is not None:
            heads, tails = run.sampler.sample(run.batch_size, steps=run.diffusion_steps,
                                              generator=run.generator)
            rows = io.gather_rows(X, torch.cat([heads, tails]).numpy()).to(run.device)
            psi = run.normalizer(self._training_outputs(run, model(rows)))
            R, R_hat = pair_rayleigh_matrices(psi[:run.batch_size], psi[run.batch_size:])
        else:
            rows = self._next_minibatch(run, X)
            W = self._minibatch_graph(run, rows)
            degree = W.sum(dim=1)
            psi = run.normalizer(self._training_outputs(run, model(rows)),
                                 weights=degree / degree.sum())
            R, R_hat = graph_rayleigh_matrices(psi, W, run.diffusion_steps)
        loss = neuralef_objective(R, R_hat, self._orthogonality_weight(objective),
                                  normalize_penalty=objective.normalize_penalty,
                                  stop_gradient=objective.stop_gradient)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        return loss.detach(), torch.diagonal(R).detach()

    def _next_minibatch(self, run: _TrainingRun, X) -> torch.Tensor:
        """Next minibatch of an epoch-wise random permutation, gathered on CPU, sent to device."""
        b = run.batch_size
        if run.permutation is None or run.position + b > run.n_samples:
            run.permutation = torch.randperm(run.n_samples, generator=run.generator)
            run.position = 0
        indices = np.sort(run.permutation[run.position:run.position + b].numpy())
        run.position += b
        run.batch_context = None if run.context is None else run.context[indices]
        return io.gather_rows(X, indices).to(run.device, non_blocking=True)

    def _minibatch_graph(self, run: _TrainingRun, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            W = self.kernel_.batch(rows, run.batch_context).to(rows.dtype)
        total = float(W.sum())  # one host sync for both checks (affinities are >= 0)
        if not math.isfinite(total):
            raise ValueError(
                f"{type(self.kernel_).__name__} gave non-finite affinities inside a minibatch "
                f"of {rows.shape[0]} points; check the kernel's parameters and the data's "
                "scale.")
        if not total > 0:
            raise ValueError(
                f"{type(self.kernel_).__name__} gives no edge inside a minibatch of "
                f"{rows.shape[0]} points: its bandwidth is too small for the data (or the "
                "batch too small for its neighbour count); use a kNN kernel or a wider "
                "bandwidth.")
        return W

    def _update_statistics(self, run: _TrainingRun, loss: torch.Tensor,
                           rayleigh: torch.Tensor) -> None:
        rayleigh = rayleigh.detach().cpu().double()
        if run.eigenvalues is None:
            run.eigenvalues = rayleigh
        else:
            m = _EIGENVALUE_MOMENTUM
            run.eigenvalues = m * run.eigenvalues + (1.0 - m) * rayleigh
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the training loss became {value} at step {run.step}; lower learning_rate "
                "or check the kernel (isolated points give zero degrees)"
            )
        run.loss_curve.append(value)

    def _eigenvalue_estimates(self, run: _TrainingRun) -> np.ndarray:
        """Eigenvalues of the random walk from the EMA of diag(R) on the diffusion."""
        return eigenvalues_from_diffusion(run.eigenvalues, run.diffusion_steps)
