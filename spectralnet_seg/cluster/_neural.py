"""NeuralEigenClustering: spectral clustering through learned eigenfunctions (NeuralEF)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import Interval

from ._neural_base import BaseNeuralEigenClustering, _TrainingRun


class NeuralEigenClustering(BaseNeuralEigenClustering):
    """Spectral clustering with neural eigenfunctions trained on minibatch kernels.

    A network ψ: R^d → R^K is trained with the NeuralEF objective (Deng et al., 2022) on the
    normalised affinity ``D^{-1/2} W D^{-1/2}`` of random minibatches, so that its outputs
    converge to the top-K eigenfunctions of the normalised affinity of the whole data set —
    the n × n graph is never formed. Clusters are found by k-means on the row-normalised
    embedding (as in Ng, Jordan & Weiss), and new points are embedded by a forward pass.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters for k-means.
    n_components : int, default=None
        Number K of eigenfunctions; ``n_clusters`` when None.
    kernel : str or Kernel, default="knn"
        Affinity, by registry name (:func:`~spectralnet_seg.kernels.list_kernels`) or as a
        :class:`~spectralnet_seg.kernels.Kernel`; only its ``batch`` method is used. A dense
        kernel (``"rbf"``, ``"cosine"``) makes the minibatch affinity an unbiased sample of the
        full one; a kNN kernel on a minibatch connects neighbours *within* the batch, which
        approximates the full kNN graph only for large batches.
    network : None, "mlp" or torch.nn.Module, default=None
        The ψ network. None/"mlp" builds :class:`~spectralnet_seg.eigenfunctions.MLPEigenfunctions`
        with ``hidden_layer_sizes``; a module mapping (batch, n_features) → (batch, K) is
        deep-copied in ``fit`` (the given one is never trained).
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Hidden widths of the default MLP.
    fourier_features : int, default=0
        If > 0, the default MLP first maps its inputs to this many random Fourier features
        (:class:`~spectralnet_seg.eigenfunctions.RandomFourierFeatures`). Plain MLPs on
        low-dimensional coordinates are biased towards slowly varying functions and miss the
        cluster indicators of non-convex shapes; 64 features fix two moons and two circles.
    fourier_scale : float, default=1.0
        Standard deviation of the Fourier frequencies, in radians per input unit (about the
        inverse of the kernel bandwidth: 2.0 for RBF ``gamma=50`` on unit-scale data).
    diffusion_steps : int, default=1
        Diffusion time t: train on the t-th power of the minibatch operator
        (:func:`~spectralnet_seg.eigenfunctions.diffusion_operator`), which has the same
        eigenfunctions and eigenvalues λ^t. With local kernels the top eigenvalues crowd
        against 1 and the gaps between them are too small for SGD to resolve (two moons:
        1, 0.99995, 0.995); t = 100 turns them into 1, 0.995, 0.62. Costs about 2 log2(t)
        (b, b) matrix products per step (once in all with whole-set batches).
        ``eigenvalues_`` are reported as R_jj^(1/t), i.e. on the scale of t = 1.
    batch_size : int, default=512
        Minibatch size b (≥ 2); the whole data set when larger than it.
    max_iter : int, default=None
        Number of optimisation steps; when None, ``max_epochs`` epochs of
        ``n_samples // batch_size`` steps.
    max_epochs : int, default=100
        Epochs when ``max_iter`` is None.
    learning_rate : float, default=1e-3
        Initial Adam learning rate, cosine-annealed to 0 over the run.
    weight_decay : float, default=0.0
        Adam weight decay.
    orthogonality_weight : float, default=None
        β, the weight of the orthogonality penalty. None: 1.0 with ``normalize_penalty=True``
        (NeuralEF's exact form), else ``20 / K`` (Deng & Luo, 2023).
    normalize_penalty : bool, default=True
        Divide the penalty R̂_ij² by R̂_ii (NeuralEF). See
        :func:`~spectralnet_seg.eigenfunctions.neuralef_loss`.
    eigenvalue_momentum : float, default=0.9
        Momentum of the running estimates: the eigenvalues (EMA of R_jj) and the per-output
        second moments used to normalise ψ during ``partial_fit`` streaming.
    n_init : int, default=10
        Number of k-means initialisations.
    device : str or torch.device, default="auto"
        Training and inference device; "auto" picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds network initialisation, minibatch sampling and k-means (torch generators; the
        global torch RNG is left untouched). An int makes CPU runs reproducible.
    verbose : bool, default=False
        Show a progress bar over the training steps.
    checkpoint_dir : str or path-like, default=None
        If set, the training state (network, optimiser, schedule, generator, step, running
        statistics) is saved there every ``checkpoint_every`` steps and at the end, and
        ``fit`` resumes from it after an interruption — with the same result as an
        uninterrupted run. The file name encodes the configuration and data, so other runs
        never resume from it.
    checkpoint_every : int, default=100
        Steps between checkpoints.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained ψ network (on the CPU; inference copies it to ``device``).
    normalizer_ : ColumnNormalization
        Per-output scaling to unit second moment over the training set.
    kernel_ : Kernel
        The resolved kernel.
    eigenvalues_ : ndarray of shape (K,)
        Eigenvalue estimates (EMA of R_jj, to the power 1/``diffusion_steps``), decreasing;
        on the scale of the eigenvalues of
        ``D^{-1/2} W D^{-1/2}`` on the training set.
    embedding_ : ndarray of shape (n_samples, K)
        ``transform`` of the training data.
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training point.
    kmeans_ : sklearn.cluster.KMeans
        Fitted on the row-normalised ``embedding_``.
    cluster_centers_ : ndarray of shape (n_clusters, K)
        Its centres (row-normalised embedding space).
    n_train_samples_ : int
        Training rows (all rows seen, for ``partial_fit``); sets the scale of ``transform``.
    n_iter_ : int
        Optimisation steps done.
    loss_curve_ : list of float
        Loss at every step.
    n_features_in_ : int
        Number of features seen in ``fit``.

    See Also
    --------
    DiscreteNeuralEigenClustering : outputs are cluster assignments, no k-means.
    EigshSpectralClustering : the exact baseline on the full graph.
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
    >>> from spectralnet_seg.kernels import make_kernel
    >>> X, y = make_blobs(200, centers=3, cluster_std=0.5, random_state=0)
    >>> est = NeuralEigenClustering(3, kernel=make_kernel("rbf", gamma=0.5),
    ...                             hidden_layer_sizes=(32,), max_iter=100, random_state=0)
    >>> est.fit(X).transform(X).shape
    (200, 3)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEigenClustering._parameter_constraints,
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_clusters=8, *, n_components=None, kernel="knn", network=None,
                 hidden_layer_sizes=(256, 256), fourier_features=0, fourier_scale=1.0,
                 diffusion_steps=1, batch_size=512, max_iter=None, max_epochs=100,
                 learning_rate=1e-3, weight_decay=0.0, orthogonality_weight=None,
                 normalize_penalty=True, eigenvalue_momentum=0.9, n_init=10, device="auto",
                 random_state=None, verbose=False, checkpoint_dir=None, checkpoint_every=100):
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.kernel = kernel
        self.network = network
        self.hidden_layer_sizes = hidden_layer_sizes
        self.fourier_features = fourier_features
        self.fourier_scale = fourier_scale
        self.diffusion_steps = diffusion_steps
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.orthogonality_weight = orthogonality_weight
        self.normalize_penalty = normalize_penalty
        self.eigenvalue_momentum = eigenvalue_momentum
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ hooks
    def _n_outputs(self) -> int:
        return self.n_clusters if self.n_components is None else self.n_components

    def _outputs_name(self) -> str:
        return "n_clusters" if self.n_components is None else "n_components"

    def _default_orthogonality_weight(self) -> float:
        return 1.0 if self.normalize_penalty else 20.0 / self._n_outputs()

    def _fingerprint_extra(self) -> dict:
        return {"n_init": self.n_init}

    def _training_outputs(self, run: _TrainingRun, raw: torch.Tensor) -> torch.Tensor:
        return run.normalizer(raw)

    def _finalize(self, X, run: _TrainingRun, *, refresh_statistics: bool) -> None:
        raw = self._raw_outputs(X)  # (n, K)
        if refresh_statistics:
            # The exact second moment over the training set replaces the running estimate,
            # so the training embedding has exactly unit-norm columns, like eigsh's.
            self.normalizer_.set_statistics(raw.double().square().mean(dim=0))
        eigenvalues = self._eigenvalue_estimates(run)
        self._order = np.argsort(-eigenvalues, kind="stable")
        self.eigenvalues_ = eigenvalues[self._order].astype(np.float64)
        self._signs = np.ones(self._n_outputs())
        embedding = self._embed(raw)
        # Deterministic signs: the largest-magnitude entry of each column is positive.
        peak = embedding[np.abs(embedding).argmax(axis=0), np.arange(embedding.shape[1])]
        self._signs = np.where(peak < 0, -1.0, 1.0)
        self.embedding_ = embedding * self._signs
        self.kmeans_ = KMeans(self.n_clusters, n_init=self.n_init,
                              random_state=self._kmeans_seed).fit(normalize(self.embedding_))
        self.labels_ = self.kmeans_.labels_
        self.cluster_centers_ = self.kmeans_.cluster_centers_

    # ------------------------------------------------------------------ inference
    def _embed(self, raw: torch.Tensor) -> np.ndarray:
        """Normalised, ordered, sign-fixed ψ scaled to unit-norm columns over the training set."""
        with torch.no_grad():
            psi = self.normalizer_(raw).double().numpy()
        return psi[:, self._order] * (self._signs / np.sqrt(self.n_train_samples_))

    def transform(self, X):
        """Eigenfunction embedding ψ(X), one column per eigenfunction.

        Columns are ordered by decreasing eigenvalue, sign-fixed, and scaled so that over the
        training set they have unit norm — the scale of the eigenvectors of eigsh.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Data, new or seen.

        Returns
        -------
        ndarray of shape (n_samples, K)
        """
        X = self._validated(X)
        return self._embed(self._raw_outputs(X))

    def predict(self, X):
        """Cluster of each row: k-means (fitted on the training embedding) applied to ψ(X).

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)
            Data, new or seen.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        embedding = self.transform(X)  # checks that the estimator is fitted
        return self.kmeans_.predict(normalize(embedding))
