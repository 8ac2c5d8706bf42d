"""NeuralEigenClustering: spectral clustering through learned eigenfunctions (NeuralEF)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import Interval, StrOptions

from ..metrics import normalized_cut
from ._assign import assign_labels, cluster_embedding, nearest_centroid
from ._neural_base import BaseNeuralEigenClustering
from ._neural_training import TrainingObjective
from ._registry import register_estimator
from ._training_run import _TrainingRun


@register_estimator("neural")
class NeuralEigenClustering(BaseNeuralEigenClustering):
    """Spectral clustering with neural eigenfunctions (NeuralEF), trained on the kernel's graph.

    A network ψ: R^d → R^K is trained with the NeuralEF objective (Deng et al., 2022) so that
    its outputs span the top-K eigenfunctions of the random walk on the kernel's affinity W
    (``W f = λ D f``: the eigenvectors ``u`` of ``D^{-1/2} W D^{-1/2}`` divided by ``√d``)
    — the embedding that eigsh with ``embedding_norm="degree"`` and scikit-learn's
    ``SpectralClustering`` cluster. The n × n eigenproblem is never solved; new points are
    embedded by a forward pass.

    Training samples pairs from the *global* graph that eigsh decomposes (an edge with
    probability ∝ its weight, then a few lazy random-walk steps), so every minibatch is an
    unbiased sample of the same operator whatever its size; on data too large for a global
    graph, each minibatch builds its own (``sampler``). What the fit needs is decided from
    the data without labels (batch size, input scaling, Fourier features, diffusion time,
    number of steps) and recorded in the ``*_`` attributes. After training, a Rayleigh–Ritz
    step on the training graph orders the learned functions and makes them exactly
    orthogonal; k-means on the embedding gives the clusters.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters for k-means.
    n_components : int, default=None
        Number K of eigenfunctions; ``n_clusters`` when None.
    kernel : str or Kernel, default="knn"
        Affinity, by registry name ([`list_kernels`][spectralnet_seg.kernels.list_kernels]) or as a
        [`Kernel`][spectralnet_seg.kernels.Kernel]. The default is scikit-learn's
        10-nearest-neighbour connectivity graph (``kneighbors_graph``), symmetrised, as in
        ``SpectralClustering(affinity="nearest_neighbors")`` but without self-loops.
        ``"precomputed"`` is refused: the network needs features;
        pass your affinity as ``fit(X, graph=W)``.
    network : None, "mlp" or torch.nn.Module, default=None
        The ψ network. None/"mlp" builds
        [`MLPEigenfunctions`][spectralnet_seg.eigenfunctions.MLPEigenfunctions] (input
        standardisation
        fitted on the data, Fourier features, ``hidden_layer_sizes``); a module mapping
        (batch, n_features) → (batch, K) is deep-copied in ``fit`` and used as is.
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden widths of the default MLP.
    fourier_features : "auto" or int, default="auto"
        Random Fourier frequencies appended to the default MLP's inputs ("auto": 64, i.e.
        128 features; 0: none). They remove the MLP's bias towards slowly varying functions,
        which otherwise misses sharp cluster boundaries (two moons).
    fourier_scale : "auto" or float, default="auto"
        Standard deviation of the frequencies per standardised input unit; "auto": half a
        radian per median graph edge length (``fourier_scale_``).
    diffusion_steps : "auto" or int, default="auto"
        Diffusion time t: train on one random-walk step followed by t − 1 lazy ones, which
        has the same eigenfunctions and eigenvalues λ((1 + λ)/2)^{t−1}. Local graphs crowd
        their top eigenvalues against 1 (two moons: 1, 0.99995, 0.995), too close for SGD
        to tell apart; diffusion spreads them. "auto" adapts t during training so that the
        K-th eigenvalue keeps about half its weight (at most 32; ``diffusion_steps_``).
    sampler : {"auto", "graph", "minibatch"}, default="auto"
        ``"graph"``: pairs from the global graph (built once with the kernel, as eigsh does);
        ``"minibatch"``: a graph built inside each minibatch (no global graph: for data too
        large for one, or streamed). "auto" picks "graph" when the kernel's estimated graph
        cost is under about 10 s of compute (``sampler_``).
    batch_size : "auto" or int, default="auto"
        Pairs per step (graph sampler) or points per minibatch; "auto": 256 pairs (at
        least 4 K), or 1024 points (``batch_size_``); a ``partial_fit`` call trains on
        batches of at most its own rows. Much smaller batches make the
        eigenvalue estimates noisy enough for the plateau test (``tol``) to stop early: on
        digits with K = 10, 64 pairs stopped at a mean principal-angle cosine of 0.80 with
        eigsh's eigenvectors, 256 reached 0.99 (``benchmarks/bench_eigenfunctions.py``).
    max_iter : int, default=5000
        Largest number of optimisation steps.
    tol : float, default=1e-2
        Training stops (after a short learning-rate anneal) when the mean eigenvalue
        estimate has not risen by more than ``tol × (1 − best)`` for ``n_iter_no_change``
        checks, which come every ``min(100, max_iter // 10)`` steps.
    n_iter_no_change : int, default=5
        Checks without improvement that stop training.
    learning_rate : float, default=1e-3
        Adam learning rate (inputs are standardised, so it does not depend on their units).
    weight_decay : float, default=0.0
        Adam weight decay.
    orthogonality_weight : float, default=None
        β of NeuralEF's normalised orthogonality penalty; None: 1.0, NeuralEF's exact form.
    embedding_norm : {"degree", "row", "auto"}, default="degree"
        What k-means clusters: ``"degree"`` the eigenfunctions themselves (the random-walk
        eigenvectors, as scikit-learn's ``SpectralClustering``); ``"row"`` unit-norm rows
        (Ng, Jordan & Weiss; the same as row-normalising the eigenvectors of
        ``D^{-1/2} W D^{-1/2}``); ``"auto"`` the one with the lower normalised cut on the
        training graph (graph sampler only; see
        [`EigshSpectralClustering`][spectralnet_seg.cluster.EigshSpectralClustering]).
    n_init : int, default=10
        Number of k-means initialisations.
    device : str or torch.device, default="auto"
        Training and inference device; "auto" picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds network initialisation, pair sampling and k-means (private torch generators;
        the global torch RNG is left untouched). An int makes CPU runs reproducible.
    verbose : bool, default=False
        Show a progress bar over the training steps.
    checkpoint_dir : str or path-like, default=None
        If set, the training state is saved there every ``checkpoint_every`` steps and at
        the end, and ``fit`` resumes from it after an interruption, with the same result as
        an uninterrupted run. The file name encodes the configuration and data.
    checkpoint_every : int, default=100
        Steps between checkpoints.
    callback : callable, default=None
        Called by ``fit`` as ``callback(snapshot, n_iter)`` at each convergence check
        (every ``min(100, max_iter // 10)`` steps until the plateau) and once when
        training ends, ``n_iter`` being the steps done. ``snapshot()`` returns a fitted copy
        of the estimator as if training had stopped there: ``labels_``, ``embedding_`` and
        the rest computed by the code ``fit`` runs after training. It is computed on its first call only, so a callback
        that does not need it costs nothing, and the callback can time it. Training waits
        meanwhile and its result does not depend on the callback; the seconds spent in it
        are ``callback_time_``. Its return value is ignored; an exception raised by it
        stops ``fit`` and leaves the estimator as it was before. Not part of the
        checkpoint's identity; ``partial_fit`` does not call it. Under ``torch.distributed``
        every process calls it: call ``snapshot()`` on all or none.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained ψ network (on the CPU; inference copies it to ``device``).
    normalizer_ : ColumnNormalization
        Per-output scaling to unit second moment, with its running estimate from training
        (used in training; at inference its scaling is part of the final output map).
    kernel_ : Kernel or None
        The kernel that built the training graph (None with ``fit(X, graph=W)``).
    eigenvalues_ : ndarray of shape (K,)
        Decreasing. With the graph sampler: the Rayleigh quotients of the learned
        eigenfunctions on the training graph (estimates of the top eigenvalues of
        ``D^{-1/2} W D^{-1/2}``, from below); else running estimates from training.
    embedding_ : ndarray of shape (n_samples, K)
        ``transform`` of the training data.
    labels_ : ndarray of shape (n_samples,), int32
        Cluster of each training point.
    normalized_cut_ : float
        Normalised cut of ``labels_`` on the training graph (lower is better; compares fits
        without labels). NaN with the minibatch sampler.
    cluster_centers_ : ndarray of shape (n_clusters, K)
        k-means centres in the (normalised) embedding; [`predict`][predict] takes the nearest.
    embedding_norm_ : str
        The normalisation used (the one chosen with ``embedding_norm="auto"``).
    sampler_, batch_size_, diffusion_steps_, fourier_features_, fourier_scale_
        The settings used (see the parameters; ``diffusion_steps_`` is the final t).
    n_iter_ : int
        Optimisation steps done.
    converged_ : bool
        Whether the eigenvalue estimates reached a plateau before ``max_iter`` (set by
        ``fit``; ``partial_fit`` has no stopping rule and leaves it unset).
    convergence_history_ : list of dict
        One entry per check: ``step``, ``mean_eigenvalue``, ``diffusion_steps`` (``fit``
        only).
    loss_curve_ : list of float
        Loss at every step.
    callback_time_ : float
        Seconds ``fit`` spent in ``callback``, the snapshots it finished included (0.0
        without one): subtract it from a timed fit (``fit`` only).
    n_train_samples_ : int
        Training rows (all rows seen, for ``partial_fit``).
    n_features_in_ : int
        Number of features seen in ``fit``.

    See Also
    --------
    DiscreteNeuralEigenClustering : outputs are cluster assignments, no k-means.
    EigshSpectralClustering : the exact baseline on the same graph.
    spectralnet_seg.eigenfunctions.eigenfunction_alignment : compare with eigsh.

    References
    ----------
    Z. Deng, J. Shi, J. Zhu. "NeuralEF: Deconstructing kernels by deep neural networks."
    ICML 2022. Z. Deng, Y. Luo. "Learning neural eigenfunctions for unsupervised semantic
    segmentation." ICCV 2023.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from spectralnet_seg.cluster import NeuralEigenClustering
    >>> X, y = make_blobs(300, centers=3, random_state=0)
    >>> est = NeuralEigenClustering(3, max_iter=300, random_state=0).fit(X)
    >>> est.transform(X).shape, est.sampler_
    ((300, 3), 'graph')
    """

    _parameter_constraints: dict = {
        **BaseNeuralEigenClustering._parameter_constraints,
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "embedding_norm": [StrOptions({"degree", "row", "auto"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_clusters=8, *, n_components=None, kernel="knn", network=None,
                 hidden_layer_sizes=(128, 128), fourier_features="auto", fourier_scale="auto",
                 diffusion_steps="auto", sampler="auto", batch_size="auto", max_iter=5000,
                 tol=1e-2, n_iter_no_change=5, learning_rate=1e-3, weight_decay=0.0,
                 orthogonality_weight=None, embedding_norm="degree", n_init=10,
                 device="auto", random_state=None, verbose=False, checkpoint_dir=None,
                 checkpoint_every=100, callback=None):
        self.n_clusters = n_clusters
        self.n_components = n_components
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
        self.embedding_norm = embedding_norm
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.callback = callback

    # ------------------------------------------------------------------ hooks
    def _n_outputs(self) -> int:
        return self.n_clusters if self.n_components is None else self.n_components

    def _outputs_name(self) -> str:
        return "n_clusters" if self.n_components is None else "n_components"

    def _objective(self) -> TrainingObjective:
        return TrainingObjective(orthogonality_weight=1.0, normalize_penalty=True,
                                 stop_gradient=True)

    def _finalize(self, X, run: _TrainingRun, graph: sp.csr_matrix | None) -> None:
        raw = self._raw_outputs(X).double().numpy()  # (n, K)
        self.eigenvalues_, self._output_map = self._eigenfunction_map(raw, graph, run)
        self.embedding_ = raw @ self._output_map
        if graph is not None:
            # In u-space (eigenvectors of D^-1/2 W D^-1/2) the shared labelling path applies:
            # "degree" gives back the eigenfunctions, "row" their unit-norm rows. Isolated
            # points have u = 0 there whatever the network says: they are labelled by their
            # network outputs afterwards, as the disconnected-graph warning promises.
            degree = np.asarray(graph.sum(axis=1)).ravel()
            linked = degree > 0
            if np.count_nonzero(linked) < self.n_clusters:
                # Too few linked points to cluster apart: the network's outputs label every
                # point, as predict does (degree-scaled, the isolated rows would all be 0).
                labels, centers = self._labels_from_outputs()
            else:
                sub = graph if linked.all() else graph[linked][:, linked]
                labels = np.empty(len(degree), dtype=np.int32)
                labels[linked], centers, self.embedding_norm_ = cluster_embedding(
                    self.embedding_[linked] * np.sqrt(degree[linked])[:, None],
                    degree[linked], self.n_clusters, norm=self.embedding_norm,
                    n_init=self.n_init, random_state=self._label_seed, graph=sub)
                if not linked.all():
                    labels[~linked] = nearest_centroid(
                        self._label_space(self.embedding_[~linked]), centers)
            self.normalized_cut_ = normalized_cut(graph, labels)
        else:
            labels, centers = self._labels_from_outputs()
            self.normalized_cut_ = np.nan
        self.labels_, self.cluster_centers_ = labels, centers

    def _labels_from_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """k-means of the embedding without a graph's degrees (labels, centres)."""
        self.embedding_norm_ = "row" if self.embedding_norm == "row" else "degree"
        return assign_labels(self._label_space(self.embedding_), self.n_clusters,
                             n_init=self.n_init, random_state=self._label_seed)

    _RANK_ZERO_STATE = (*BaseNeuralEigenClustering._RANK_ZERO_STATE, "eigenvalues_",
                        "_output_map", "embedding_norm_", "cluster_centers_")

    def _after_rank_zero_state(self, X) -> None:
        # This rank's chunk, through rank 0's output map and centres.
        self.embedding_ = self._raw_outputs(X).double().numpy() @ self._output_map
        self.labels_ = nearest_centroid(self._label_space(self.embedding_),
                                        self.cluster_centers_)

    # ------------------------------------------------------------------ inference
    def _label_space(self, embedding: np.ndarray) -> np.ndarray:
        """The embedding the clusters live in (see ``embedding_norm``)."""
        return normalize(embedding) if self.embedding_norm_ == "row" else embedding

    def transform(self, X):
        """Eigenfunction embedding ψ(X), one column per eigenfunction.

        Columns are ordered by decreasing eigenvalue and sign-fixed. With the graph
        sampler (``sampler_ == "graph"``) they are D-orthogonal over the training points and
        scaled so that ``Σ_i (d_i / d̄) ψ(x_i)² = 1`` there (a Rayleigh–Ritz step on the
        training graph); with the minibatch sampler, which has no global graph, they have
        unit norm over the training points (``Σ_i ψ(x_i)² = 1``, as with the graph sampler
        when all degrees are equal) and are only approximately orthogonal.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Data, new or seen.

        Returns
        -------
        ndarray of shape (n_samples, K)
        """
        X = self._validated(X)
        return self._raw_outputs(X).double().numpy() @ self._output_map

    def predict(self, X):
        """Cluster of each row: the k-means of the training embedding applied to ψ(X).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Data, new or seen.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int32
        """
        embedding = self.transform(X)  # checks that the estimator is fitted
        return nearest_centroid(self._label_space(embedding), self.cluster_centers_)
