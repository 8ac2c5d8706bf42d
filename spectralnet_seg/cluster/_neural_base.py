"""Shared machinery of the neural eigenfunction estimators: validation, the training graph,
the settings decided from the data, the training loop and checkpoints.

Training estimates the Rayleigh matrix R of the network's outputs on the kernel's graph —
from pairs drawn from the global graph (``GraphPairSampler``), or
exactly on a graph built inside each minibatch — and minimises the NeuralEF objective on
it, at a constant learning rate until the eigenvalue estimates reach a plateau, then with a
cosine anneal (``PlateauSchedule``).

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
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import distributed as dist_utils
from .._utils import progress, resolve_device
from ..eigenfunctions import (
    ColumnNormalization,
    MLPEigenfunctions,
    diffusion_eigenvalues,
    eigenvalues_from_diffusion,
    graph_rayleigh_matrices,
    neuralef_objective,
    pair_rayleigh_matrices,
)
from ..kernels import as_token_context, kernel_tags
from . import _neural_io as io
from . import _neural_settings as settings
from ._base import BaseSpectralClustering, check_n_clusters
from ._convergence import PlateauSchedule, diffusion_steps_for
from ._neural_distributed import DistributedTrainingMixin
from ._pair_sampler import GraphPairSampler
from ._spectral_embedding import DisconnectedGraphWarning, check_affinity, rayleigh_ritz
from ._training_run import _Snapshot, _TrainingRun

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


class BaseNeuralEigenClustering(DistributedTrainingMixin, BaseSpectralClustering):
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

    def _fingerprint_extra(self) -> dict:
        """Subclass parameters that change the training trajectory."""
        return {}

    def _outputs_name(self) -> str:
        return "n_clusters"

    # ------------------------------------------------------------------ public API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, context=None, graph=None):
        """Train the eigenfunction network on ``X`` (resuming from a checkpoint if any).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Training data: the network's inputs. Memory-mapped arrays and tensors are read
            one minibatch at a time and never copied as a whole.
        y : Ignored
            Not used, present for API consistency.
        context : object, optional
            Per-sample side information for kernels that use it, e.g. the token colours and
            positions ([`TokenContext`][spectralnet_seg.kernels.TokenContext]) of the paper's
            pixel kernel. Not needed by [`predict`][predict] / [`transform`][transform].
        graph : {array-like, sparse matrix} of shape (n_samples, n_samples), optional
            Your own symmetric non-negative affinity between the rows of ``X`` (e.g.
            scikit-learn's ``img_to_graph``). The network learns its eigenfunctions from
            the features ``X``; ``kernel`` is not used.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X = io.validate_rows(self, X, reset=True, min_samples=2)
        n_samples = X.shape[0]
        check_n_clusters(self.n_clusters, n_samples)
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
        first = not hasattr(self, "network_")
        X = io.validate_rows(self, X, reset=first, min_samples=2)
        if first:
            check_n_clusters(self.n_clusters, X.shape[0])
            self.kernel_ = self._feature_kernel()
            self.sampler_ = "minibatch"
            run = self._start_run(X, None, context=self._check_context(context, X.shape[0]),
                                  streaming=True)
            self.n_train_samples_ = 0
        else:
            run = self._resume_run(X)
            run.context = self._check_context(context, X.shape[0])
        n_steps = max(1, math.ceil(X.shape[0] / run.batch_size))
        self._train(run, X, n_steps=n_steps)
        self.n_train_samples_ += X.shape[0]
        self._finish(X, run, None)
        return self

    # ------------------------------------------------------------------ the training graph
    def _feature_kernel(self):
        kernel = self._resolve_kernel()
        if kernel_tags(kernel).input_is_affinity:
            raise ValueError(
                f"{type(self).__name__} needs features for its network, not an affinity "
                "matrix: kernel='precomputed' is not supported. Pass the features as X and "
                "your affinity as fit(X, graph=W)."
            )
        return kernel

    def _check_context(self, context, n_samples: int):
        """The context for the kernel: checked against ``X`` when the kernel needs one."""
        if self.kernel_ is None or not kernel_tags(self.kernel_).requires_context:
            return None
        return as_token_context(context, n_samples, owner=type(self.kernel_).__name__)


    def _chosen_sampler(self, X, user_graph) -> str:
        if user_graph is not None:
            return "graph"
        if self.sampler != "auto":
            return self.sampler
        cost = self.kernel_.graph_cost(X.shape[0], X.shape[1])
        return "graph" if cost <= settings.GRAPH_COST_BUDGET else "minibatch"

    def _training_graph(self, X, context, user_graph) -> sp.csr_matrix | None:
        """The global graph (user's or the kernel's), validated; None for minibatch graphs."""
        self.sampler_ = self._chosen_sampler(X, user_graph)
        if self.sampler_ == "minibatch":
            return None
        if user_graph is not None:
            W = check_affinity(user_graph, name="graph")
            if W.shape[0] != X.shape[0]:
                raise ValueError(f"graph is {W.shape[0]} x {W.shape[0]} but X has "
                                 f"{X.shape[0]} rows; give one node per row of X.")
        else:
            if not isinstance(X, np.ndarray):
                X = io.gather_rows(X, np.arange(X.shape[0])).numpy()
            self._cap_kernel_neighbors(X.shape[0] - 1, "n_samples - 1")
            W = check_affinity(self.kernel_.graph(X, context),
                               name=f"{type(self.kernel_).__name__}.graph(X)")
        W = W - sp.diags(W.diagonal())  # self-loops carry no information between points
        W = sp.csr_matrix(W)
        W.eliminate_zeros()
        self._check_graph(W)
        return W

    def _cap_kernel_neighbors(self, limit: int, what: str) -> None:
        """Lower the kernel's declared neighbour counts to what a graph of the data allows."""
        if self.kernel_ is None or not hasattr(self.kernel_, "cap_neighbors"):
            return
        lowered = self.kernel_.cap_neighbors(max(int(limit), 1))
        if lowered:
            warnings.warn(f"{type(self.kernel_).__name__} parameters {lowered} exceed {what} "
                          f"= {limit}; using {limit} instead.", UserWarning, stacklevel=4)

    def _check_graph(self, W: sp.csr_matrix) -> None:
        """Clear errors and warnings for graphs the method cannot learn from."""
        if W.nnz == 0:
            raise ValueError(
                "the affinity graph has no edges (every weight is 0): the kernel's bandwidth "
                "is too small for the scale of the data (e.g. RBF gamma too large), or the "
                "data are all identical. Use a kNN kernel or a wider bandwidth.")
        degree = np.asarray(W.sum(axis=1)).ravel()
        isolated = int(np.count_nonzero(degree <= 0))
        if isolated:
            warnings.warn(
                f"{isolated} of {W.shape[0]} points have no edge in the affinity graph; the "
                "objective says nothing about them and their labels come from the network "
                "alone.", DisconnectedGraphWarning, stacklevel=4)
        n_components, _ = connected_components(W, directed=False)
        n_components -= isolated
        if n_components > self._n_outputs():
            warnings.warn(
                f"the affinity graph has {n_components} connected components but only "
                f"{self._n_outputs()} outputs: every component indicator is an eigenfunction "
                "of eigenvalue 1, so the top eigenfunctions are not unique and the fit cannot "
                "converge to a well-defined answer. Increase the kernel's n_neighbors (or "
                "bandwidth) to connect the graph, or ask for more clusters.",
                ConvergenceWarning, stacklevel=4)

    # ------------------------------------------------------------------ setup
    def _seeds(self) -> tuple[int, int, int]:
        """Seeds for network initialisation, the training generator and label assignment."""
        rng = check_random_state(self.random_state)
        init, train, labels = rng.randint(0, np.iinfo(np.int32).max, size=3)
        # Distributed: every rank uses rank 0's seeds (random_state=None would otherwise
        # give the ranks different k-means seeds, hence different labels).
        return dist_utils.broadcast_object((int(init), int(train), int(labels)))

    def _orthogonality_weight(self, objective: TrainingObjective) -> float:
        if self.orthogonality_weight is None:
            return objective.orthogonality_weight
        return float(self.orthogonality_weight)

    def _resolve_settings(self, X, W, generator: torch.Generator, *, context) -> None:
        """Decide the "auto" settings from the data and record them (``*_`` attributes)."""
        K, n = self._n_outputs(), X.shape[0]
        pairs = W is not None
        self.batch_size_ = (settings.default_batch_size(K, n, pairs=pairs)
                            if self.batch_size == "auto" else int(self.batch_size))
        if not pairs:  # minibatch graphs: the neighbours come from one batch
            self.batch_size_ = min(self.batch_size_, n)
            self._cap_kernel_neighbors(self.batch_size_ - 1, "batch_size - 1")
        geometry = "euclidean" if self.kernel_ is None else self.kernel_.input_geometry()
        self._input_statistics = settings.input_statistics(
            X, normalize_rows=geometry == "cosine", generator=generator)
        default_network = self.network is None or self.network == "mlp"
        self.fourier_features_ = (settings.AUTO_FOURIER_FEATURES
                                  if self.fourier_features == "auto" and default_network
                                  else 0 if self.fourier_features == "auto"
                                  else int(self.fourier_features))
        self.fourier_scale_ = (float(self.fourier_scale) if self.fourier_scale != "auto"
                               else self._auto_fourier_scale(X, W, generator, context))
        self.diffusion_steps_ = 1 if self.diffusion_steps == "auto" else int(
            self.diffusion_steps)

    def _auto_fourier_scale(self, X, W, generator, context) -> float:
        if self.fourier_features_ == 0:
            return 1.0
        if W is not None:
            heads, tails = GraphPairSampler(W).sample(2048, generator=generator)
            heads, tails = heads.numpy(), tails.numpy()
        else:  # the edges of one minibatch graph
            rows = np.sort(torch.randperm(X.shape[0], generator=generator)[
                :self.batch_size_].numpy())
            batch = io.gather_rows(X, rows)
            batch_context = None if context is None else context[rows]
            edges = np.argwhere(self.kernel_.batch(batch, batch_context).numpy() > 0)
            if edges.size == 0:
                return 1.0
            keep = torch.randperm(len(edges), generator=generator)[:2048].numpy()
            heads, tails = rows[edges[keep, 0]], rows[edges[keep, 1]]
        return settings.fourier_scale_from_edges(X, heads, tails, self._input_statistics)

    def _build_network(self, n_features: int, init_seed: int) -> nn.Module:
        """A fresh ψ network (seeded without touching the global RNG) or a copy of the user's."""
        if isinstance(self.network, nn.Module):
            return copy.deepcopy(self.network)
        hidden = tuple(self.hidden_layer_sizes)
        if not all(isinstance(h, Integral) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes must be a sequence of positive ints, got {hidden!r}"
            )
        stats = self._input_statistics
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return MLPEigenfunctions(n_features, self._n_outputs(), hidden=hidden,
                                     fourier_features=self.fourier_features_,
                                     fourier_scale=self.fourier_scale_,
                                     input_offset=stats.offset, input_scale=stats.scale,
                                     normalize_rows=stats.normalize_rows)

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

    def _fingerprint(self, X, W) -> dict:
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("verbose", "checkpoint_dir", "checkpoint_every", "device",
                               "callback")}
        params["network"] = repr(self.network)
        params["kernel"] = repr(self.kernel)
        params["random_state"] = (self.random_state if isinstance(self.random_state, Integral)
                                  else None)
        graph = None if W is None else io.data_checksum(
            np.concatenate([W.indptr, W.indices]).reshape(-1, 1))
        return {"estimator": type(self).__name__, "data": io.data_checksum(X),
                "graph": graph, "sampler": self.sampler_, **params}

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
                               context=context)
        network = self._build_network(X.shape[1], init_seed).to(device)
        self._check_network_output(network, X, device)
        normalizer = ColumnNormalization(self._n_outputs(), momentum=_EIGENVALUE_MOMENTUM)
        schedule = None if streaming else PlateauSchedule(
            max_iter=self.max_iter, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            check_every=min(CHECK_EVERY, max(1, self.max_iter // 10)))
        checkpoint = None
        if not streaming and io.checkpoints_wanted(self.checkpoint_dir, self.random_state):
            checkpoint = io.checkpoint_path(self.checkpoint_dir, type(self).__name__.lower(),
                                            self._fingerprint(X, W))
        return _TrainingRun(network=network, normalizer=normalizer.to(device),
                            optimizer=self._new_optimizer(network), generator=generator,
                            device=device, batch_size=self.batch_size_, n_samples=X.shape[0],
                            learning_rate=self.learning_rate,
                            diffusion_steps=self.diffusion_steps_, schedule=schedule,
                            sampler=None if W is None else GraphPairSampler(W),
                            checkpoint=checkpoint, context=context,
                            model=dist_utils.wrap_ddp(network))

    def _resume_run(self, X) -> _TrainingRun:
        """Rebuild the run of previous ``partial_fit`` calls from the stored CPU state."""
        device = self._training_device()
        network = self.network_.to(device)
        optimizer = self._new_optimizer(network)
        optimizer.load_state_dict(self._optimizer_state)
        generator = torch.Generator()
        generator.set_state(self._generator_state)
        return _TrainingRun(network=network, normalizer=self.normalizer_.to(device),
                            optimizer=optimizer, generator=generator, device=device,
                            batch_size=min(self.batch_size_, X.shape[0]),
                            n_samples=X.shape[0], learning_rate=self.learning_rate,
                            diffusion_steps=self.diffusion_steps_, step=self.n_iter_,
                            eigenvalues=self._eigenvalue_ema, loss_curve=list(self.loss_curve_),
                            model=dist_utils.wrap_ddp(network))

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
        snapshot.n_train_samples_ = run.n_samples
        snapshot.callback_time_ = 0.0
        snapshot._finish(X, run, W, warn=False)
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
                    "or tol.", ConvergenceWarning, stacklevel=4)

    # ------------------------------------------------------------------ training loop
    def _train(self, run: _TrainingRun, X, *, n_steps: int | None = None) -> None:
        """Train until the schedule ends (``fit``) or for ``n_steps`` steps (``partial_fit``)."""
        run.network.train()
        run.normalizer.train()
        objective = self._objective()
        last = run.step + n_steps if n_steps is not None else None
        total = n_steps if n_steps is not None else run.schedule.max_iter
        bar = progress(None, verbose=self.verbose, total=total,
                       desc=f"{type(self).__name__} training")
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
        if not bool(W.sum() > 0):
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
        """Network outputs for all rows of a validated ``X``, chunk by chunk, on the CPU."""
        device = resolve_device(self.device)
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
        return io.validate_rows(self, X, reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
