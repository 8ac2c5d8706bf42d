"""Shared machinery of the neural eigenfunction estimators: validation, device, seeding,
minibatch sampling, the training loop (Adam + cosine schedule), statistics and checkpoints.

The loop is cut into small methods — :meth:`~BaseNeuralEigenClustering._sample_batch`,
:meth:`~BaseNeuralEigenClustering._train_step`,
:meth:`~BaseNeuralEigenClustering._sync_statistics`,
:meth:`~BaseNeuralEigenClustering._save_checkpoint` (guarded by ``_is_main_process``) — so a
distributed trainer can wrap the network in ``DistributedDataParallel`` and all-reduce the
statistics without touching the rest.
"""

from __future__ import annotations

import copy
import math
import os
from abc import abstractmethod
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import distributed as dist_utils
from .._utils import progress, resolve_device
from ..eigenfunctions import (
    ColumnNormalization,
    MLPEigenfunctions,
    diffusion_operator,
    eigenvalues_from_diffusion,
    minibatch_operator,
    neuralef_loss,
)
from ..kernels import as_token_context, requires_context
from . import _neural_io as io
from ._base import BaseSpectralClustering
from ._neural_distributed import DistributedTrainingMixin
from ._training_run import _TrainingRun


class BaseNeuralEigenClustering(DistributedTrainingMixin, BaseSpectralClustering):
    """Base of :class:`NeuralEigenClustering` and :class:`DiscreteNeuralEigenClustering`.

    Subclasses set the number of outputs, the default orthogonality weight, how raw network
    outputs become the Ψ of the loss (:meth:`_training_outputs`) and what is computed after
    training (:meth:`_finalize`).
    """

    _parameter_constraints: dict = {
        **BaseSpectralClustering._base_constraints,
        "network": [None, StrOptions({"mlp"}), nn.Module],
        "hidden_layer_sizes": [tuple, list],
        "fourier_features": [Interval(Integral, 0, None, closed="left")],
        "fourier_scale": [Interval(Real, 0, None, closed="neither")],
        "diffusion_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "max_iter": [None, Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "orthogonality_weight": [None, Interval(Real, 0, None, closed="left")],
        "normalize_penalty": ["boolean"],
        "eigenvalue_momentum": [Interval(Real, 0, 1, closed="left")],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "checkpoint_dir": [None, str, os.PathLike],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
    }

    # ------------------------------------------------------------------ subclass hooks
    #: Stop-gradient on the earlier function of each penalty pair (eigenfunction ordering).
    _penalty_stop_gradient: bool = True

    @abstractmethod
    def _n_outputs(self) -> int:
        """Number K of network outputs."""

    @abstractmethod
    def _default_orthogonality_weight(self) -> float:
        """β used when ``orthogonality_weight=None``."""

    @abstractmethod
    def _training_outputs(self, run: _TrainingRun, raw: torch.Tensor) -> torch.Tensor:
        """Ψ of shape (b, K) entering the loss, from raw network outputs (b, K)."""

    @abstractmethod
    def _finalize(self, X, run: _TrainingRun, *, refresh_statistics: bool) -> None:
        """Set the fitted attributes after training on ``X``."""

    def _fingerprint_extra(self) -> dict:
        """Subclass parameters that change the training trajectory."""
        return {}

    # ------------------------------------------------------------------ public API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, context=None):
        """Train the eigenfunction network on ``X`` (resuming from a checkpoint if any).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Training data. Memory-mapped arrays and tensors are read one minibatch at a time
            and never copied as a whole (nor moved to the device).
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it, e.g. the token colours and
            positions (:class:`~spectralnet_seg.kernels.TokenContext`) of the paper's
            pixel kernel; each minibatch's kernel gets the rows of its samples. Ignored by
            plain feature kernels; not needed by :meth:`predict` / :meth:`transform`.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X = io.validate_rows(self, X, reset=True, min_samples=2)
        self._check_n_clusters(X.shape[0])
        n_samples = X.shape[0]
        batch_size = min(self.batch_size, n_samples)
        steps_per_epoch = max(1, n_samples // batch_size)
        total_steps = self.max_iter if self.max_iter is not None else (
            self.max_epochs * steps_per_epoch)
        run = self._start_run(X, total_steps=total_steps, cosine_schedule=True)
        if run.checkpoint is not None and io.resume_from_checkpoint(run):
            self._rank_streams_after_resume(run)
        run.context = self._check_context(context, n_samples)
        self._train(run, X, n_steps=total_steps - run.step)
        self.n_train_samples_ = n_samples
        self._store_run(run)
        self._finalize(X, run, refresh_statistics=True)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, context=None):
        """One pass of training over a chunk of a stream (``ceil(n_chunk / batch_size)`` steps).

        The first call initialises the network like :meth:`fit`; later calls continue from
        the current network, Adam moments and random generator. The learning rate is kept
        constant (a stream has no known end for a cosine schedule); the discrete estimator
        anneals its temperature over ``max_iter`` steps (or ``max_epochs`` times the steps of
        the first chunk) and then stays at ``temperature_end``. ``n_train_samples_`` counts
        all rows seen, which sets the scale of :meth:`transform`. Checkpoints are not written.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            A chunk of training data.
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it, e.g. the token colours and
            positions (:class:`~spectralnet_seg.kernels.TokenContext`) of the paper's
            pixel kernel; each minibatch's kernel gets the rows of its samples. Ignored by
            plain feature kernels; not needed by :meth:`predict` / :meth:`transform`.

        Returns
        -------
        self : object
        """
        first = not hasattr(self, "network_")
        X = io.validate_rows(self, X, reset=first, min_samples=2)
        if first:
            self._check_n_clusters(X.shape[0])
        n_steps = max(1, math.ceil(X.shape[0] / min(self.batch_size, X.shape[0])))
        if first:
            horizon = self.max_iter if self.max_iter is not None else self.max_epochs * n_steps
            run = self._start_run(X, total_steps=horizon, cosine_schedule=False,
                                  use_checkpoints=False)
            self.n_train_samples_ = 0
        else:
            run = self._resume_run(X)
        run.context = self._check_context(context, X.shape[0])
        self._train(run, X, n_steps=n_steps)
        self.n_train_samples_ += X.shape[0]
        self._store_run(run)
        self._finalize(X, run, refresh_statistics=False)
        return self

    # ------------------------------------------------------------------ setup
    def _check_context(self, context, n_samples: int):
        """The context for the kernel: checked against ``X`` when the kernel needs one."""
        if not requires_context(self.kernel_):
            return None
        return as_token_context(context, n_samples, owner=type(self.kernel_).__name__)

    def _check_n_clusters(self, n_samples: int) -> None:
        if self.n_clusters > n_samples:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than the number of samples "
                f"n_samples={n_samples}; use at most {n_samples} clusters."
            )

    def _seeds(self) -> tuple[int, int, int]:
        """Seeds for network initialisation, the training generator and k-means."""
        rng = check_random_state(self.random_state)
        init, train, kmeans = rng.randint(0, np.iinfo(np.int32).max, size=3)
        # Distributed: every rank uses rank 0's seeds (random_state=None would otherwise
        # give the ranks different k-means seeds, hence different labels).
        return dist_utils.broadcast_object((int(init), int(train), int(kmeans)))

    def _orthogonality_weight(self) -> float:
        if self.orthogonality_weight is None:
            return self._default_orthogonality_weight()
        return float(self.orthogonality_weight)

    def _build_network(self, n_features: int, init_seed: int) -> nn.Module:
        """A fresh ψ network (seeded without touching the global RNG) or a copy of the user's."""
        K = self._n_outputs()
        if isinstance(self.network, nn.Module):
            return copy.deepcopy(self.network)
        hidden = tuple(self.hidden_layer_sizes)
        if not all(isinstance(h, Integral) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes must be a sequence of positive ints, got {hidden!r}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return MLPEigenfunctions(n_features, K, hidden=hidden,
                                     fourier_features=self.fourier_features,
                                     fourier_scale=self.fourier_scale)

    def _check_network_output(self, network: nn.Module, X, device: torch.device) -> None:
        """Run two rows through a user network to give a clear error for a wrong shape."""
        K = self._n_outputs()
        probe = io.gather_rows(X, np.arange(2)).to(device)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                out = network(probe)
        except Exception as exc:  # any failure here is a mismatch between network and data
            raise ValueError(
                f"the network failed on a batch of shape {tuple(probe.shape)} "
                f"(n_features={X.shape[1]}): {exc}"
            ) from exc
        finally:
            network.train(was_training)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, K):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the network must map a batch of shape (batch_size, n_features) to "
                f"(batch_size, {K}) ({K} = {self._outputs_name()}); it returned {shape} for "
                f"an input of shape {tuple(probe.shape)}"
            )

    def _outputs_name(self) -> str:
        return "n_clusters"

    def _fingerprint(self, X, total_steps: int) -> dict:
        network = self.network
        desc = repr(network) if isinstance(network, nn.Module) else (
            f"mlp{tuple(self.hidden_layer_sizes)}, fourier "
            f"{self.fourier_features} x {self.fourier_scale}")
        seed = self.random_state if isinstance(self.random_state, Integral) else None
        return {
            "estimator": type(self).__name__, "data": io.data_checksum(X),
            "K": self._n_outputs(), "n_clusters": self.n_clusters, "kernel": repr(self.kernel),
            "network": desc, "total_steps": total_steps, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
            "beta": self._orthogonality_weight(), "normalize_penalty": self.normalize_penalty,
            "momentum": self.eigenvalue_momentum, "random_state": seed,
            "diffusion_steps": self.diffusion_steps,
            **self._fingerprint_extra(),
        }

    def _start_run(self, X, *, total_steps: int, cosine_schedule: bool,
                   use_checkpoints: bool = True) -> _TrainingRun:
        """Build kernel, network, optimiser, schedule and generator for a new run."""
        device = self._training_device()
        init_seed, train_seed, kmeans_seed = self._seeds()
        self._kmeans_seed = kmeans_seed
        self.kernel_ = self._resolve_kernel()
        network = self._build_network(X.shape[1], init_seed).to(device)
        self._check_network_output(network, X, device)
        normalizer = ColumnNormalization(self._n_outputs(), momentum=self.eigenvalue_momentum)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate,
                                     weight_decay=self.weight_decay)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
                     if cosine_schedule else None)
        generator = torch.Generator().manual_seed(self._rank_seed(train_seed))
        checkpoint = None
        if use_checkpoints and io.checkpoints_wanted(self.checkpoint_dir, self.random_state):
            checkpoint = io.checkpoint_path(self.checkpoint_dir, type(self).__name__.lower(),
                                            self._fingerprint(X, total_steps))
        return _TrainingRun(network=network, normalizer=normalizer.to(device),
                            optimizer=optimizer, scheduler=scheduler, generator=generator,
                            device=device, total_steps=total_steps,
                            batch_size=min(self.batch_size, X.shape[0]), n_samples=X.shape[0],
                            checkpoint=checkpoint, model=dist_utils.wrap_ddp(network))

    def _resume_run(self, X) -> _TrainingRun:
        """Rebuild the run of previous ``partial_fit`` calls from the stored CPU state."""
        device = self._training_device()
        network = self.network_.to(device)
        normalizer = self.normalizer_.to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate,
                                     weight_decay=self.weight_decay)
        optimizer.load_state_dict(self._optimizer_state)
        generator = torch.Generator()
        generator.set_state(self._generator_state)
        return _TrainingRun(network=network, normalizer=normalizer, optimizer=optimizer,
                            scheduler=None, generator=generator, device=device,
                            total_steps=self._schedule_horizon,
                            batch_size=min(self.batch_size, X.shape[0]), n_samples=X.shape[0],
                            step=self.n_iter_, eigenvalues=self._eigenvalue_ema,
                            loss_curve=list(self.loss_curve_),
                            model=dist_utils.wrap_ddp(network))

    def _store_run(self, run: _TrainingRun) -> None:
        """Keep the trained modules and the optimiser/generator state, all on the CPU."""
        run.network.eval()
        run.normalizer.eval()
        self.network_ = run.network.cpu()
        self.normalizer_ = run.normalizer.cpu()
        self._optimizer_state = io.to_cpu(run.optimizer.state_dict())
        self._generator_state = run.generator.get_state()
        self._schedule_horizon = run.total_steps
        self._eigenvalue_ema = run.eigenvalues
        self.n_iter_ = run.step
        self.loss_curve_ = list(run.loss_curve)

    # ------------------------------------------------------------------ training loop
    def _train(self, run: _TrainingRun, X, *, n_steps: int) -> None:
        run.network.train()
        run.normalizer.train()
        steps = progress(range(n_steps), verbose=self.verbose, total=n_steps,
                         desc=f"{type(self).__name__} training")
        for _ in steps:
            batch = self._sample_batch(run, X)
            loss, rayleigh = self._train_step(run, batch)
            loss, rayleigh = self._sync_statistics(run, loss, rayleigh)
            self._update_statistics(run, loss, rayleigh)
            run.step += 1
            if hasattr(steps, "set_postfix") and run.step % 10 == 0:
                steps.set_postfix(loss=f"{run.loss_curve[-1]:.4f}")
            if run.checkpoint is not None and (
                    run.step % self.checkpoint_every == 0 or run.step == run.total_steps):
                self._save_checkpoint(run)

    def _sample_batch(self, run: _TrainingRun, X) -> torch.Tensor:
        """Next minibatch of an epoch-wise random permutation, gathered on CPU, sent to device."""
        b = run.batch_size
        if run.permutation is None or run.position + b > run.n_samples:
            run.permutation = torch.randperm(run.n_samples, generator=run.generator)
            run.position = 0
        indices = run.permutation[run.position:run.position + b]
        run.position += b
        indices = np.sort(indices.numpy())
        run.batch_context = None if run.context is None else run.context[indices]
        rows = io.gather_rows(X, indices)
        return rows.to(run.device, non_blocking=True)

    def _batch_operator(self, X_batch: torch.Tensor, n_samples: int,
                        context: Any = None) -> torch.Tensor:
        """G ≈ (D^{-1/2} W D^{-1/2})^t / n on a minibatch of b of the n training points.

        See :func:`~spectralnet_seg.eigenfunctions.minibatch_operator`: with unit-second-moment
        ψ_j ≈ √n u_j, E[ψ_jᵀ G ψ_j] ≈ λ_j, so diag(R) estimates the eigenvalues of the
        normalised affinity on the full data — the scale of the eigsh baseline. With
        ``diffusion_steps`` t > 1 the batch operator is raised to the power t
        (:func:`~spectralnet_seg.eigenfunctions.diffusion_operator`), and diag(R) ≈ λ_j^t.
        """
        with torch.no_grad():
            G = minibatch_operator(self.kernel_.batch(X_batch, context), n_samples)
            return diffusion_operator(G, self.diffusion_steps)

    def _step_operator(self, run: _TrainingRun, X_batch: torch.Tensor) -> torch.Tensor:
        """The operator of this step; computed once when every batch is the whole data set."""
        if run.batch_size < run.n_samples:
            return self._batch_operator(X_batch, run.n_samples, run.batch_context)
        if run.full_batch_operator is None:  # same rows (sorted) every step: same G
            run.full_batch_operator = self._batch_operator(X_batch, run.n_samples,
                                                           run.batch_context)
        return run.full_batch_operator

    def _eigenvalue_estimates(self, run: _TrainingRun) -> np.ndarray:
        """Eigenvalues of the normalised affinity from the EMA of diag(R) ≈ λ^t."""
        values = eigenvalues_from_diffusion(run.eigenvalues, self.diffusion_steps)
        return values.numpy().astype(np.float64)

    def _train_step(self, run: _TrainingRun, X_batch: torch.Tensor):
        """One optimisation step on a minibatch; returns (loss, diag(R)) detached."""
        G = self._step_operator(run, X_batch)
        model = run.model if run.model is not None else run.network
        psi = self._training_outputs(run, model(X_batch))  # DDP all-reduces the gradients
        loss, rayleigh = neuralef_loss(psi, G, self._orthogonality_weight(),
                                       normalize_penalty=self.normalize_penalty,
                                       stop_gradient=self._penalty_stop_gradient,
                                       return_rayleigh=True)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        return loss.detach(), rayleigh

    def _update_statistics(self, run: _TrainingRun, loss: torch.Tensor,
                           rayleigh: torch.Tensor) -> None:
        rayleigh = rayleigh.detach().cpu().double()
        if run.eigenvalues is None:
            run.eigenvalues = rayleigh
        else:
            m = self.eigenvalue_momentum
            run.eigenvalues = m * run.eigenvalues + (1.0 - m) * rayleigh
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the training loss became {value} at step {run.step}; lower learning_rate "
                "or check the kernel (isolated points give zero degrees)"
            )
        run.loss_curve.append(value)

    # ------------------------------------------------------------------ inference
    def _network_on(self, device: torch.device) -> nn.Module:
        """The fitted network on ``device`` (a copy unless CPU: ``network_`` stays on CPU)."""
        if device.type == "cpu":
            return self.network_
        return copy.deepcopy(self.network_).to(device)

    def _raw_outputs(self, X) -> torch.Tensor:
        """Network outputs for all rows of a validated ``X``, chunk by chunk, on the CPU."""
        device = resolve_device(self.device)
        network = self._network_on(device)
        network.eval()
        outputs = []
        with torch.inference_mode():
            for chunk in io.iter_chunks(X):
                outputs.append(network(chunk.to(device)).float().cpu())
        return torch.cat(outputs) if outputs else torch.empty(0, self._n_outputs())

    def _validated(self, X):
        check_is_fitted(self)
        return io.validate_rows(self, X, reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
