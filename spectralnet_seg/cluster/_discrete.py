"""DiscreteNeuralEigenClustering: neural eigenfunctions whose outputs are cluster assignments."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..eigenfunctions import cosine_temperature, gumbel_softmax
from ..metrics import normalized_cut
from ._discrete_fine_tuning import DiscreteFineTuningMixin
from ._neural_base import BaseNeuralEigenClustering
from ._neural_training import TrainingObjective
from ._registry import register_estimator
from ._training_run import _TrainingRun

#: Cap of the default β = 20 / K of the discrete objective (reached for K <= 200).
_MAX_DEFAULT_ORTHOGONALITY_WEIGHT = 0.1


@register_estimator("discrete")
class DiscreteNeuralEigenClustering(DiscreteFineTuningMixin, BaseNeuralEigenClustering):
    """Spectral clustering whose network outputs cluster assignments (Deng & Luo, ICCV 2023).

    The network's K outputs are logits z; the cluster of a point is ``argmax(z)``, so a new
    image is segmented by one forward pass, without k-means. They are trained with the
    discrete NeuralEF objective of Deng & Luo: soft Gumbel-softmax assignments
    p = softmax((z + g) / τ) (τ cosine-annealed from ``temperature_start`` to
    ``temperature_end``), normalised column-wise, enter the NeuralEF loss on the kernel's
    graph, whose trace term is then the relaxed normalised association of the clusters
    (K − normalised cut) and whose penalty β Σ_{i<j} R_ij² keeps them apart.

    That objective has local optima: a random start can settle on a cut that splits every
    true cluster (on two moons, a cut through both moons). With ``init="spectral"`` (the default)
    training
    therefore starts from the spectral solution: the network is first trained as
    [`NeuralEigenClustering`][NeuralEigenClustering] (the top-K eigenfunctions, which have no local
    optima),
    ``n_init`` k-means partitions of that embedding are scored by their normalised cut on
    the training graph, a linear head turning the eigenfunctions into the logits of the best
    one is appended, and the whole network is fine-tuned with the discrete objective for
    ``fine_tune_iter`` steps on the graph itself. The fine-tuned assignment is kept only if
    it empties none of the start's clusters and its normalised cut is not worse. ``init="random"`` trains the discrete objective from a
    random network, as in the paper.

    K = ``n_clusters`` may exceed the number of classes; clusters are then mapped to classes
    for evaluation by the many-to-one majority vote of
    [`spectralnet_seg.metrics`][spectralnet_seg.metrics].
    Some of the K clusters may end up empty; ``n_active_clusters_`` reports how many are used.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of outputs K (clusters).
    kernel : str or Kernel, default="knn"
        Affinity; see [`NeuralEigenClustering`][NeuralEigenClustering] (``fit(X, graph=W)`` for your
        own).
    network : None, "mlp" or torch.nn.Module, default=None
        The network; a module must map (batch, n_features) → (batch, n_clusters).
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden widths of the default MLP.
    fourier_features : "auto" or int, default="auto"
        See [`NeuralEigenClustering`][NeuralEigenClustering].
    fourier_scale : "auto" or float, default="auto"
        See [`NeuralEigenClustering`][NeuralEigenClustering].
    diffusion_steps : "auto" or int, default="auto"
        Diffusion time of the eigenfunction training (and of ``init="random"``); the
        fine-tuning uses the graph itself (t = 1), whose relaxed objective is the
        normalised cut. See [`NeuralEigenClustering`][NeuralEigenClustering].
    sampler : {"auto", "graph", "minibatch"}, default="auto"
        See [`NeuralEigenClustering`][NeuralEigenClustering].
    batch_size : "auto" or int, default="auto"
        See [`NeuralEigenClustering`][NeuralEigenClustering].
    max_iter : int, default=5000
        Largest number of steps of the first phase (the whole training with
        ``init="random"``).
    tol : float, default=1e-2
        Plateau tolerance; see [`NeuralEigenClustering`][NeuralEigenClustering].
    n_iter_no_change : int, default=5
        See [`NeuralEigenClustering`][NeuralEigenClustering].
    learning_rate : float, default=1e-3
        Adam learning rate (the fine-tuning starts at 0.3 × this and anneals to 0).
    weight_decay : float, default=0.0
        Adam weight decay.
    orthogonality_weight : float, default=None
        β of the discrete objective's plain penalty; None means ``min(20 / n_clusters,
        0.1)``: the paper's 20 / K for K in the hundreds, capped for small K, where 20 / K
        lets a few outputs take every point (digits, K = 10, random start: β = 2 left 7
        clusters).
    init : {"spectral", "random"}, default="spectral"
        Start of the discrete training (see above).
    n_init : int, default=10
        k-means partitions of the eigenfunction embedding, the best by normalised cut
        (by k-means inertia with the minibatch sampler) starts the fine-tuning.
    fine_tune_iter : int, default=500
        Steps of discrete fine-tuning after ``init="spectral"`` (0: keep the k-means
        partition, as a nearest-centroid head).
    temperature_start : float, default=1.0
        Gumbel-softmax temperature at the start of the discrete training.
    temperature_end : float, default=0.3
        Temperature at its end; also the τ of [`predict_proba`][predict_proba].
    device : str or torch.device, default="auto"
        Training and inference device.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, sampling, k-means and Gumbel noise (private generators).
    verbose : bool, default=False
        Progress bar over the training steps.
    checkpoint_dir : str or path-like, default=None
        Save/resume the (first-phase) training state there; see
        [`NeuralEigenClustering`][NeuralEigenClustering].
    checkpoint_every : int, default=100
        Steps between checkpoints.
    callback : callable, default=None
        ``callback(snapshot, n_iter)`` at each convergence check of the first phase and
        once when training ends; see [`NeuralEigenClustering`][NeuralEigenClustering].
        With ``init="spectral"`` the checks are those of the eigenfunction phase and
        ``snapshot()`` runs the k-means start and the discrete fine-tuning from there.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained logit network (on the CPU).
    normalizer_ : ColumnNormalization
        Per-output scaling to unit second moment, with its running estimate from training
        (used in training only: the logits of ``transform`` and ``predict`` are ``network_``'s
        raw outputs, whose argmax a per-column scaling would change).
    kernel_ : Kernel or None
        The kernel that built the training graph.
    labels_ : ndarray of shape (n_samples,), int32
        ``argmax`` cluster of each training point.
    embedding_ : ndarray of shape (n_samples, n_clusters)
        Logits of the training data (``transform``).
    eigenvalues_ : ndarray of shape (n_clusters,)
        Normalised association ``assoc(C_k) / vol(C_k)`` of each cluster on the training
        graph (0 for empty clusters); running estimates with the minibatch sampler, NaN there
        when no discrete training was kept (``fine_tune_iter=0``, or fine-tuning undone).
    normalized_cut_ : float
        Normalised cut of ``labels_`` on the training graph (NaN with the minibatch
        sampler).
    fine_tuned_ : bool
        Whether the fine-tuned assignment was kept (set by ``fit`` with
        ``init="spectral"`` only).
    temperature_end_ : float
        The Gumbel-softmax temperature training ended at, which ``predict_proba`` uses:
        ``temperature_end``, or with ``init="random"`` the annealing's value after ``n_iter_``
        of its ``max_iter`` steps (the plateau rule may stop it earlier).
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Training points per cluster.
    n_active_clusters_ : int
        Non-empty clusters on the training data (≤ n_clusters; collapse shows here).
    callback_time_ : float
        Seconds ``fit`` spent in ``callback``, the snapshots it finished included (0.0
        without one): subtract it from a timed fit.
    sampler_, batch_size_, diffusion_steps_, fourier_features_, fourier_scale_, n_iter_, \
converged_, convergence_history_, loss_curve_, n_train_samples_, n_features_in_
        As in [`NeuralEigenClustering`][NeuralEigenClustering] (``n_iter_`` counts both phases).

    See Also
    --------
    NeuralEigenClustering : continuous eigenfunctions + k-means.

    References
    ----------
    Z. Deng, Y. Luo. "Learning neural eigenfunctions for unsupervised semantic segmentation."
    ICCV 2023.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from spectralnet_seg.cluster import DiscreteNeuralEigenClustering
    >>> X, y = make_blobs(300, centers=3, random_state=0)
    >>> est = DiscreteNeuralEigenClustering(3, max_iter=300, fine_tune_iter=50,
    ...                                     random_state=0).fit(X)
    >>> est.predict_proba(X).shape
    (300, 3)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEigenClustering._parameter_constraints,
        "init": [StrOptions({"spectral", "random"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "fine_tune_iter": [Interval(Integral, 0, None, closed="left")],
        "temperature_start": [Interval(Real, 0, None, closed="neither")],
        "temperature_end": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, n_clusters=8, *, kernel="knn", network=None,
                 hidden_layer_sizes=(128, 128), fourier_features="auto", fourier_scale="auto",
                 diffusion_steps="auto", sampler="auto", batch_size="auto", max_iter=5000,
                 tol=1e-2, n_iter_no_change=5, learning_rate=1e-3, weight_decay=0.0,
                 orthogonality_weight=None, init="spectral", n_init=10, fine_tune_iter=500,
                 temperature_start=1.0, temperature_end=0.3, device="auto",
                 random_state=None, verbose=False, checkpoint_dir=None, checkpoint_every=100,
                 callback=None):
        self.n_clusters = n_clusters
        self.kernel = kernel
        self.network = network
        self.hidden_layer_sizes = hidden_layer_sizes
        self.fourier_features = fourier_features
        self.fourier_scale = fourier_scale
        self.diffusion_steps = diffusion_steps
        self.sampler = sampler
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.orthogonality_weight = orthogonality_weight
        self.init = init
        self.n_init = n_init
        self.fine_tune_iter = fine_tune_iter
        self.temperature_start = temperature_start
        self.temperature_end = temperature_end
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.callback = callback

    # ------------------------------------------------------------------ hooks
    def _n_outputs(self) -> int:
        return self.n_clusters

    def _discrete_objective(self) -> TrainingObjective:
        # Clusters have no order: the penalty pushes both members of each pair apart (no
        # stop-gradient). With it, the first output is free to become the constant top
        # eigenfunction — one cluster holding every point.
        return TrainingObjective(
            orthogonality_weight=min(20.0 / self.n_clusters, _MAX_DEFAULT_ORTHOGONALITY_WEIGHT),
            normalize_penalty=False, stop_gradient=False)

    def _objective(self) -> TrainingObjective:
        if self._phase == "eigenfunctions":
            return TrainingObjective(orthogonality_weight=1.0, normalize_penalty=True,
                                     stop_gradient=True)
        return self._discrete_objective()

    def _orthogonality_weight(self, objective: TrainingObjective) -> float:
        if self._phase == "eigenfunctions":
            return objective.orthogonality_weight  # β only sets the discrete penalty
        return super()._orthogonality_weight(objective)

    def _diffusion_reference(self, eigenvalues: np.ndarray) -> float:
        # Unordered clusters: the weakest one sets the diffusion time.
        return float(eigenvalues.min()) if self._phase == "discrete" else float(eigenvalues[-1])

    def _training_outputs(self, run: _TrainingRun, raw: torch.Tensor) -> torch.Tensor:
        if self._phase == "eigenfunctions":
            return raw
        horizon = self.fine_tune_iter if self.init == "spectral" else self.max_iter
        temperature = cosine_temperature(run.step, horizon, self.temperature_start,
                                         self.temperature_end)
        return gumbel_softmax(raw, temperature, generator=run.generator)

    def fit(self, X, y=None, *, context=None, graph=None):
        self._phase = "eigenfunctions" if self.init == "spectral" else "discrete"
        return super().fit(X, y, context=context, graph=graph)

    fit.__doc__ = BaseNeuralEigenClustering.fit.__doc__

    def _fit(self, X, *, context=None, graph=None):
        # Inside fit's restore-on-exception: a failed refit keeps the fitted fine_tuned_.
        self.__dict__.pop("fine_tuned_", None)  # set again by this fit's fine-tuning only
        return super()._fit(X, context=context, graph=graph)

    def partial_fit(self, X, y=None, *, context=None):
        # A stream has no end at which to switch phases: train the discrete objective.
        self._phase = "discrete"
        return super().partial_fit(X, y, context=context)

    partial_fit.__doc__ = BaseNeuralEigenClustering.partial_fit.__doc__

    def _partial_fit(self, X, *, context=None):
        # Whether fit kept its fine-tuning no longer describes the model the stream trains.
        self.__dict__.pop("fine_tuned_", None)
        return super()._partial_fit(X, context=context)

    # ------------------------------------------------------------------ after training
    def _finalize(self, X, run: _TrainingRun, graph: sp.csr_matrix | None) -> None:
        if self._phase == "eigenfunctions":
            self._fine_tune(X, run, graph)
        # The temperature training ended at: predict_proba describes the fitted model even
        # if set_params changes temperature_end afterwards. init="random" anneals over
        # max_iter, and the plateau rule often stops it long before (at 1000 of 2000 steps
        # the temperature was 0.65, not temperature_end's 0.3); fine-tuning runs its whole
        # schedule.
        self.temperature_end_ = (
            cosine_temperature(self.n_iter_, self.max_iter, self.temperature_start,
                               self.temperature_end)
            if self.init == "random" else self.temperature_end)
        logits = self._raw_outputs(X).double().numpy()
        self.embedding_ = logits
        self.labels_ = logits.argmax(axis=1).astype(np.int32)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        self.n_active_clusters_ = int(np.count_nonzero(self.cluster_sizes_))
        if graph is None:
            self.eigenvalues_ = (np.full(self.n_clusters, np.nan) if run.eigenvalues is None
                                 else self._eigenvalue_estimates(run))
            self.normalized_cut_ = np.nan
        else:
            self.eigenvalues_ = _normalized_associations(graph, self.labels_, self.n_clusters)
            self.normalized_cut_ = normalized_cut(graph, self.labels_)

    # ------------------------------------------------------------------ inference
    def transform(self, X):
        """Cluster logits z of each row (use [`predict_proba`][predict_proba] for probabilities).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_clusters)
        """
        X = self._validated(X)
        return self._raw_outputs(X).double().numpy()

    def predict(self, X):
        """Cluster of each row: ``argmax`` of the logits.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,), int32
        """
        return self.transform(X).argmax(axis=1).astype(np.int32)

    def predict_proba(self, X):
        """Soft assignments ``softmax(z / temperature_end_)`` (the fit's final temperature).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_clusters)
            Rows sum to one.
        """
        logits = torch.from_numpy(self.transform(X))
        return torch.softmax(logits / self.temperature_end_, dim=1).numpy()


def _normalized_associations(graph, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """``assoc(C_k) / vol(C_k)`` per cluster on the graph (0 for empty clusters)."""
    indicator = sp.csr_matrix((np.ones(labels.size), (np.arange(labels.size), labels)),
                              shape=(labels.size, n_clusters))
    volume = indicator.T @ np.asarray(graph.sum(axis=1)).ravel()
    association = (indicator.T @ graph @ indicator).diagonal()
    return np.divide(association, volume, out=np.zeros(n_clusters), where=volume > 0)
