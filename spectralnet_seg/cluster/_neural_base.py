"""Shared machinery of the neural eigenfunction estimators: the public API (``fit``,
``partial_fit``), a run's start, resumption and checkpoint fingerprint, what happens after
training (fitted attributes, ``callback`` snapshots) and inference.

The estimator is assembled from one mixin per job: the training graph
([`_neural_graph`][_neural_graph]), the settings and network of a run
([`_neural_setup`][_neural_setup]), the training loop
([`_neural_training`][_neural_training]) and distributed training
([`_neural_distributed`][_neural_distributed]).

The loop is cut into small methods — [`_train_step`][BaseNeuralEigenClustering._train_step],
[`_sync_statistics`][BaseNeuralEigenClustering._sync_statistics],
[`_save_checkpoint`][BaseNeuralEigenClustering._save_checkpoint] (guarded by ``_is_main_process``) —
so a
distributed trainer can wrap the network in ``DistributedDataParallel`` and all-reduce the
statistics without touching the rest.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from abc import abstractmethod
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import distributed as dist_utils
from .._utils import loaded_model_device, stable_description, user_stacklevel
from ..eigenfunctions import ColumnNormalization
from . import _neural_io as io
from ._base import BaseSpectralClustering, check_n_clusters, check_n_components
from ._convergence import PlateauSchedule
from ._neural_distributed import DistributedTrainingMixin
from ._neural_graph import TrainingGraphMixin
from ._neural_setup import NetworkSetupMixin
from ._neural_training import (
    _EIGENVALUE_MOMENTUM,
    CHECK_EVERY,
    TrainingLoopMixin,
    TrainingObjective,
)
from ._pair_sampler import GraphPairSampler
from ._spectral_embedding import rayleigh_ritz
from ._training_run import _Snapshot, _TrainingRun


class BaseNeuralEigenClustering(ClassNamePrefixFeaturesOutMixin, TrainingGraphMixin,
                                NetworkSetupMixin, TrainingLoopMixin,
                                DistributedTrainingMixin, BaseSpectralClustering):
    """Base of [`NeuralEigenClustering`][NeuralEigenClustering] and
    [`DiscreteNeuralEigenClustering`][DiscreteNeuralEigenClustering].

    Subclasses set the number of outputs, the training objective, how raw outputs become the
    Ψ of the loss ([`_training_outputs`][_training_outputs]) and what happens after the
    eigenfunction
    training ([`_finalize`][_finalize]).
    """

    _parameter_constraints: dict = {
        **BaseSpectralClustering._base_constraints,
        "network": [None, StrOptions({"mlp"}), nn.Module],
        "hidden_layer_sizes": [tuple, list],
        "fourier_features": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left")],
        "fourier_scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "diffusion_steps": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "sampler": [StrOptions({"auto", "graph", "minibatch"})],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 2, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "orthogonality_weight": [None, Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "checkpoint_dir": [None, str, os.PathLike],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
        "callback": [None, callable],
    }

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _n_outputs(self) -> int:
        """Number K of network outputs."""

    @abstractmethod
    def _objective(self) -> TrainingObjective:
        """Penalty form and weight of the eigenfunction training."""

    def _training_outputs(self, run: _TrainingRun, raw: torch.Tensor) -> torch.Tensor:
        """Outputs (b, K) entering the normalisation and the loss; raw ones by default."""
        return raw

    @abstractmethod
    def _finalize(self, X, run: _TrainingRun, graph: sp.csr_matrix | None) -> None:
        """Set the fitted attributes after training on ``X`` (``graph``: the training graph)."""

    def _outputs_name(self) -> str:
        return "n_clusters"

    # ------------------------------------------------------------------ public API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, context=None, graph=None):
        """Train the eigenfunction network on ``X`` (resuming from a checkpoint if any).

        Parameters
        ----------
        X : array-like, np.memmap, torch.Tensor, path or list of paths
            Training data of shape (n_samples, n_features): the network's inputs. A ``.npy``
            file, a list of ``.npy`` shard files (rows concatenated in that order), a shard
            folder or a torch ``Dataset`` of rows
            ([`as_feature_source`][spectralnet_seg.data.as_feature_source]); memory-mapped
            arrays, files and tensors are read one minibatch at a time and never copied as
            a whole.
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it, e.g. the token colours and
            positions ([`TokenContext`][spectralnet_seg.kernels.TokenContext]) of the paper's
            pixel kernel. Not needed by [`predict`][predict] / [`transform`][transform].
        graph : {array-like, sparse matrix} of shape (n_samples, n_samples), optional
            Your own symmetric non-negative affinity between the rows of ``X`` (e.g.
            scikit-learn's ``img_to_graph``). The network learns its eigenfunctions from
            the features ``X``; ``kernel`` is not used. Its diagonal (self-loops) is
            dropped, as every kernel's graph has none: ``eigenvalues_`` and
            ``normalized_cut_`` describe the graph without it.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        # A fit stopped by an exception (a callback raising, an interrupt) leaves the
        # estimator as it was, not half-refitted (new n_features_in_, old network).
        before = dict(self.__dict__)
        try:
            return self._fit(X, context=context, graph=graph)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X, *, context=None, graph=None):
        self.__dict__.pop("_stream_kernel", None)  # a partial_fit stream's, before this fit
        X = io.validate_rows(self, X, reset=True, min_samples=2)
        self._check_same_rows_on_every_rank(X)
        n_samples = X.shape[0]
        check_n_clusters(self.n_clusters, n_samples)
        check_n_components(self._n_outputs(), n_samples)
        self.kernel_ = None if graph is not None else self._feature_kernel()
        context = None if graph is not None else self._check_context(context, n_samples)
        W = self._training_graph(X, context, graph)
        if W is not None and not isinstance(X, np.ndarray):
            # A global graph is only built for data small enough to hold: read it once.
            X = io.gather_rows(X, np.arange(n_samples)).numpy()
        run = self._start_run(X, W, context=context)
        if run.checkpoint is not None and io.resume_from_checkpoint(run):
            self._rank_streams_after_resume(run)
        if self.callback is not None:
            run.on_check = lambda state: self._report_check(X, state, W)
        self._train(run, X)
        if run.on_check is not None and run.reported_step != run.step:
            run.on_check(run)  # the state training ended in
        self.callback_time_ = run.callback_time
        self.n_train_samples_ = n_samples
        self._finish(X, run, W)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, context=None):
        """One pass of training over a chunk of a stream (``ceil(n_chunk / batch_size)`` steps).

        Streams have no global graph: each minibatch's affinity is built inside it
        (``sampler_ = "minibatch"``). The first call initialises the network like
        [`fit`][fit]; later calls continue from the current network, Adam moments and random
        generator, at a constant learning rate. ``n_train_samples_`` counts all rows seen.
        Checkpoints are not written.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            A chunk of training data.
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it (see [`fit`][fit]).

        Returns
        -------
        self : object
        """
        # As for fit: a call stopped by an exception leaves the estimator as it was (the
        # run trains a copy of the network, see _resume_run).
        before = dict(self.__dict__)
        try:
            return self._partial_fit(X, context=context)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _partial_fit(self, X, *, context=None):
        first = not hasattr(self, "network_")
        if not first:
            self._check_outputs_unchanged()
            if self.kernel_ is None:
                raise ValueError(
                    f"partial_fit continues training on in-batch graphs of a feature kernel, "
                    f"but this {type(self).__name__} was fitted with graph=...: it has no "
                    "kernel for new rows. Refit with fit(X, graph=W) instead.")
        X = io.validate_rows(self, X, reset=first, min_samples=2)
        self._check_equal_chunks(X.shape[0])
        if first and self.checkpoint_dir is not None:
            warnings.warn("partial_fit writes no checkpoints (checkpoint_dir is used by fit "
                          "only); to resume a stream, pickle the estimator between chunks.",
                          io.CheckpointWarning, stacklevel=user_stacklevel())
        if first:
            check_n_clusters(self.n_clusters, X.shape[0])
            check_n_components(self._n_outputs(), X.shape[0])
            self.kernel_ = self._feature_kernel()
            self.sampler_ = "minibatch"
            run = self._start_run(X, None, context=self._check_context(context, X.shape[0]),
                                  streaming=True)
            self.n_train_samples_ = 0
        else:
            if self.kernel_ is not None:
                self._kernel_for_chunk(X.shape[0])
            run = self._resume_run(X)
            run.context = self._check_context(context, X.shape[0])
            # After a fit, the stream trains on in-batch graphs and has no stopping rule:
            # the fit's sampler and convergence record no longer describe the model.
            self.sampler_ = "minibatch"
            for name in ("converged_", "convergence_history_", "callback_time_"):
                self.__dict__.pop(name, None)
        n_steps = max(1, math.ceil(X.shape[0] / run.batch_size))
        self._train(run, X, n_steps=n_steps)
        self.n_train_samples_ += X.shape[0]
        self._finish(X, run, None)
        self._share_rank_zero_state(X)
        return self

    @property
    def _n_features_out(self) -> int:
        # Output names of get_feature_names_out: one per column of transform.
        return self.embedding_.shape[1]

    # ------------------------------------------------------------------ setup
    def _seeds(self) -> tuple[int, int, int]:
        """Seeds for network initialisation, the training generator and label assignment."""
        rng = check_random_state(self.random_state)
        init, train, labels = rng.randint(0, np.iinfo(np.int32).max, size=3)
        # Distributed: every rank uses rank 0's seeds (random_state=None would otherwise
        # give the ranks different k-means seeds, hence different labels).
        return dist_utils.broadcast_object((int(init), int(train), int(labels)))

    def _fingerprint(self, X, W, context=None) -> dict:
        """What identifies a run's checkpoint: every parameter that shapes the trajectory
        (a user network by its weights, a kernel by all its nested parameters), the data,
        the training graph with its weights, and the token context."""
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("verbose", "checkpoint_dir", "checkpoint_every", "device",
                               "callback")}
        params["random_state"] = (self.random_state if isinstance(self.random_state, Integral)
                                  else None)
        graph = None if W is None else stable_description(
            {"indptr": W.indptr, "indices": W.indices, "data": W.data})
        if context is not None and hasattr(context, "colors"):
            context = {"colors": context.colors, "positions": context.positions,
                       "image_ids": context.image_ids}
        return {"estimator": type(self).__name__, "data": io.data_checksum(X),
                "graph": graph, "context": stable_description(context),
                "sampler": self.sampler_, **stable_description(params)}

    def _new_optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(network.parameters(), lr=self.learning_rate,
                                weight_decay=self.weight_decay)

    def _start_run(self, X, W, *, context=None, streaming: bool = False) -> _TrainingRun:
        """Settings, network, optimiser, schedule and generator of a new run."""
        device = self._training_device()
        init_seed, train_seed, label_seed = self._seeds()
        self._label_seed = label_seed
        generator = torch.Generator().manual_seed(self._rank_seed(train_seed))
        self._resolve_settings(X, W, torch.Generator().manual_seed(train_seed),
                               context=context, streaming=streaming)
        network = self._build_network(X.shape[1], init_seed).to(device)
        self._check_network_output(network, X, device)
        normalizer = ColumnNormalization(self._n_outputs(), momentum=_EIGENVALUE_MOMENTUM)
        schedule = None if streaming else PlateauSchedule(
            max_iter=self.max_iter, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            check_every=min(CHECK_EVERY, max(1, self.max_iter // 10)))
        checkpoint = None
        if not streaming and io.checkpoints_wanted(self.checkpoint_dir, self.random_state):
            checkpoint = io.checkpoint_path(self.checkpoint_dir, type(self).__name__.lower(),
                                            self._fingerprint(X, W, context))
        return _TrainingRun(network=network, normalizer=normalizer.to(device),
                            optimizer=self._new_optimizer(network), generator=generator,
                            device=device, n_samples=X.shape[0],
                            # pairs (graph sampler) are drawn with replacement: not capped
                            batch_size=(self.batch_size_ if W is not None
                                        else min(self.batch_size_, X.shape[0])),
                            learning_rate=self.learning_rate,
                            diffusion_steps=self.diffusion_steps_, schedule=schedule,
                            sampler=None if W is None else GraphPairSampler(W),
                            checkpoint=checkpoint, context=context,
                            model=self._lockstep_model(network))

    def _resume_run(self, X) -> _TrainingRun:
        """Rebuild the run of previous ``partial_fit`` calls from the stored CPU state."""
        device = self._training_device()
        # Copies: on the CPU .to() is the same object, and training it in place would leave
        # an interrupted call's weights beside the old labels and output map.
        network = copy.deepcopy(self.network_).to(device)
        optimizer = self._new_optimizer(network)
        optimizer.load_state_dict(self._optimizer_state)
        for group in optimizer.param_groups:
            # The stored state holds the last learning rate of the run before: after fit,
            # its annealed 0, which would leave the network unchanged. The stream trains at
            # the current parameters' constant rate.
            group["lr"], group["weight_decay"] = self.learning_rate, self.weight_decay
        generator = torch.Generator()
        generator.set_state(self._generator_state)
        return _TrainingRun(network=network, normalizer=copy.deepcopy(self.normalizer_).to(device),
                            optimizer=optimizer, generator=generator, device=device,
                            batch_size=min(self.batch_size_, X.shape[0]),
                            n_samples=X.shape[0], learning_rate=self.learning_rate,
                            diffusion_steps=self.diffusion_steps_, step=self.n_iter_,
                            eigenvalues=self._eigenvalue_ema, loss_curve=list(self.loss_curve_),
                            model=self._lockstep_model(network))

    # ------------------------------------------------------------------ after training
    def _finish(self, X, run: _TrainingRun, W: sp.csr_matrix | None, *,
                warn: bool = True) -> None:
        """Everything ``fit`` does after the training loop: keep the run's state, then set
        the fitted attributes ([`_finalize`][_finalize]). Snapshots go through it too."""
        self._store_run(run, warn=warn)
        self._finalize(X, run, W)

    def _report_check(self, X, run: _TrainingRun, W: sp.csr_matrix | None) -> None:
        """Call ``callback(snapshot, n_iter)`` on the state after ``run.step`` steps."""
        tic = time.perf_counter()
        try:
            self.callback(_Snapshot(lambda state: self._snapshot(X, state, W), run), run.step)
        finally:
            run.reported_step = run.step
            run.callback_time += time.perf_counter() - tic

    def _snapshot(self, X, run: _TrainingRun, W: sp.csr_matrix | None):
        """A fitted copy of this estimator from the (copied) state ``run``."""
        snapshot = copy.copy(self)
        snapshot._snapshot_copy = True  # trains (fine-tuning) on this rank alone
        snapshot.n_train_samples_ = run.n_samples
        snapshot.callback_time_ = 0.0
        snapshot._finish(X, run, W, warn=False)
        del snapshot._snapshot_copy  # a refit of the snapshot trains like any estimator
        return snapshot

    def _store_run(self, run: _TrainingRun, *, warn: bool = True) -> None:
        """Keep the trained modules and the optimiser/generator state, all on the CPU."""
        run.network.eval()
        run.normalizer.eval()
        self.network_ = run.network.cpu()
        self.normalizer_ = run.normalizer.cpu()
        self._optimizer_state = io.to_cpu(run.optimizer.state_dict())
        self._generator_state = run.generator.get_state()
        self._eigenvalue_ema = run.eigenvalues
        self.diffusion_steps_ = run.diffusion_steps
        self.n_iter_ = run.step
        self.loss_curve_ = list(run.loss_curve)
        if run.schedule is not None:
            self.converged_ = bool(run.schedule.converged)
            self.convergence_history_ = list(run.schedule.history)
            if warn and not self.converged_:
                warnings.warn(
                    f"{type(self).__name__} stopped at max_iter={self.max_iter} before its "
                    f"eigenvalue estimates reached a plateau (tol={self.tol}); raise max_iter "
                    "or tol.", ConvergenceWarning, stacklevel=user_stacklevel())

    def _eigenfunction_map(self, raw: np.ndarray, W: sp.csr_matrix | None, run: _TrainingRun
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues and the (K, K) map from raw outputs to eigenfunction estimates.

        With the training graph: Rayleigh–Ritz in the span of the outputs (exact Rayleigh
        quotients, ordered, D-orthogonal); columns scaled so that ``Σ_i (d_i / d̄) e_i² = 1``
        over the training points (unit norm when all degrees are equal, like eigsh's
        eigenvectors). Without it: the outputs ordered by their running eigenvalue estimates
        and scaled to unit norm over the training points. Signs are fixed so that each
        column's largest-magnitude entry is positive.

        Parameters
        ----------
        raw : ndarray of shape (n_samples, K)
            Network outputs on the training data.
        W : sparse matrix of shape (n_samples, n_samples) or None
            The training graph.
        run : _TrainingRun
            The finished run (its eigenvalue estimates).

        Returns
        -------
        eigenvalues : ndarray of shape (K,)
        output_map : ndarray of shape (K, K)
        """
        n = raw.shape[0]
        if W is not None:
            eigenvalues, rotation = rayleigh_ritz(W, raw)
            spanned = int(np.count_nonzero(np.any(rotation != 0, axis=0)))
            if spanned < rotation.shape[1]:
                warnings.warn(
                    f"the network's {rotation.shape[1]} outputs span only {spanned} directions "
                    f"on the training points, so the last {rotation.shape[1] - spanned} "
                    "eigenfunction estimates are zero (eigenvalue 0). The network is too "
                    "narrow or collapsed: widen hidden_layer_sizes or train longer.",
                    UserWarning, stacklevel=user_stacklevel())
            output_map = rotation * math.sqrt(float(W.sum()) / n)
        else:
            estimates = self._eigenvalue_estimates(run)
            order = np.argsort(-estimates, kind="stable")
            norms = np.sqrt(np.square(raw).sum(axis=0))
            output_map = np.diag(np.divide(1.0, norms, out=np.zeros_like(norms),
                                           where=norms > 0))[:, order]
            eigenvalues = estimates[order]
        embedding = raw @ output_map
        peak = embedding[np.abs(embedding).argmax(axis=0), np.arange(embedding.shape[1])]
        return eigenvalues, output_map * np.where(peak < 0, -1.0, 1.0)

    # ------------------------------------------------------------------ inference
    def _network_on(self, device: torch.device) -> nn.Module:
        """The fitted network on ``device`` (a copy unless CPU: ``network_`` stays on CPU)."""
        if device.type == "cpu":
            return self.network_
        return copy.deepcopy(self.network_).to(device)

    def _raw_outputs(self, X) -> torch.Tensor:
        """Network outputs for all rows of a validated ``X``, chunk by chunk, on the CPU.

        A network fitted on a GPU and loaded where there is none runs on the CPU, with a
        warning (``fit`` has already refused a missing device, so this is inference only).
        """
        device = loaded_model_device(self.device, type(self).__name__)
        network = self._network_on(device)
        network.eval()
        # Filled in place: small per-chunk outputs kept alive between the chunks' large
        # temporaries would fragment the heap and hold those temporaries' pages resident.
        outputs = torch.empty(X.shape[0], self._n_outputs())
        start = 0
        with torch.inference_mode():
            for chunk in io.iter_chunks(X):
                outputs[start:start + len(chunk)] = network(chunk.to(device))
                start += len(chunk)
        return outputs

    def _validated(self, X):
        check_is_fitted(self)
        self._check_outputs_unchanged()
        return io.validate_rows(self, X, reset=False)

    def _check_outputs_unchanged(self) -> None:
        """Refuse a fitted model whose output count was changed by ``set_params``."""
        fitted = self.normalizer_.running_second_moment.shape[0]
        if self._n_outputs() != fitted:
            raise ValueError(
                f"this {type(self).__name__} was fitted with {fitted} outputs, but its "
                f"{self._outputs_name()} is now {self._n_outputs()}: refit it (fit) after "
                "changing the number of outputs.")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
