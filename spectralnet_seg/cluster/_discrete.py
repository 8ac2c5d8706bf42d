"""DiscreteNeuralEigenClustering: neural eigenfunctions whose outputs are cluster assignments."""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval

from ..eigenfunctions import cosine_temperature, gumbel_softmax
from ._neural_base import BaseNeuralEigenClustering, _TrainingRun

#: Cap of the default β = 20 / K (reached for K <= 200).
_MAX_DEFAULT_ORTHOGONALITY_WEIGHT = 0.1


class DiscreteNeuralEigenClustering(BaseNeuralEigenClustering):
    """Spectral clustering whose network outputs cluster assignments (Deng & Luo, ICCV 2023).

    The network's K outputs are logits z. During training, a soft Gumbel-softmax sample
    p = softmax((z + g) / τ), with τ cosine-annealed from ``temperature_start`` to
    ``temperature_end``, is normalised column-wise to unit second moment and trained with the
    NeuralEF loss on the minibatch affinity, i.e. a relaxed normalised-cut objective over
    near-one-hot assignment vectors. At inference the cluster is ``argmax(z)``: no k-means.
    Clusters have no order, so the orthogonality penalty β Σ_{i<j} R_ij² acts on both
    members of each pair (no stop-gradient, unlike :class:`NeuralEigenClustering`): with the
    stop-gradient the first output becomes the constant top eigenfunction and every point
    ends up in one cluster.

    K = ``n_clusters`` may exceed the number of classes; clusters are then mapped to classes
    for evaluation by the many-to-one majority vote of :mod:`spectralnet_seg.metrics`.
    Some of the K clusters may end up empty; ``n_active_clusters_`` reports how many were used.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of outputs K (clusters).
    kernel : str or Kernel, default="knn"
        Affinity; see :class:`NeuralEigenClustering`.
    network : None, "mlp" or torch.nn.Module, default=None
        The logit network; a module must map (batch, n_features) → (batch, n_clusters).
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Hidden widths of the default MLP.
    fourier_features : int, default=0
        Random Fourier features in front of the default MLP; see
        :class:`NeuralEigenClustering`.
    fourier_scale : float, default=1.0
        Standard deviation of their frequencies (radians per input unit).
    diffusion_steps : int, default=1
        Train on the t-th power of the minibatch operator, which widens the gaps between
        the top eigenvalues; see :class:`NeuralEigenClustering`.
    batch_size : int, default=512
        Minibatch size (≥ 2); the whole data set when larger than it.
    max_iter : int, default=None
        Optimisation steps; when None, ``max_epochs`` epochs.
    max_epochs : int, default=100
        Epochs when ``max_iter`` is None.
    learning_rate : float, default=1e-3
        Initial Adam learning rate (cosine-annealed to 0).
    weight_decay : float, default=0.0
        Adam weight decay.
    orthogonality_weight : float, default=None
        β; None means ``min(20 / n_clusters, 0.1)``: the paper's 20 / K for K in the
        hundreds (0.078 at K = 256), capped at 0.1 for small K. Uncapped, 20 / K is large
        when K is small and lets a few outputs take every point early in training (digits,
        K = 10: β = 2 leaves 7 clusters and NMI 0.48; β = 0.05–0.2 keeps all 10 and gives
        0.83–0.88).
    normalize_penalty : bool, default=False
        Use NeuralEF's R̂_ii-normalised penalty instead of the paper's plain one.
    temperature_start : float, default=1.0
        Gumbel-softmax temperature at the first step.
    temperature_end : float, default=0.3
        Temperature at the last step; also the τ of :meth:`predict_proba`.
    eigenvalue_momentum : float, default=0.9
        Momentum of the running estimates (``eigenvalues_``).
    device : str or torch.device, default="auto"
        Training and inference device.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, minibatches and Gumbel noise (private torch generators).
    verbose : bool, default=False
        Progress bar over the training steps.
    checkpoint_dir : str or path-like, default=None
        Save/resume the training state there; see :class:`NeuralEigenClustering`.
    checkpoint_every : int, default=100
        Steps between checkpoints.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained logit network (on the CPU).
    kernel_ : Kernel
        The resolved kernel.
    labels_ : ndarray of shape (n_samples,)
        ``argmax`` cluster of each training point.
    embedding_ : ndarray of shape (n_samples, n_clusters)
        Logits of the training data (``transform``).
    eigenvalues_ : ndarray of shape (n_clusters,)
        EMA of R_jj (to the power 1/``diffusion_steps``), the (relaxed) normalised
        association of each cluster.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Training points per cluster.
    n_active_clusters_ : int
        Non-empty clusters on the training data (≤ n_clusters; collapse shows here).
    n_train_samples_, n_iter_, loss_curve_, n_features_in_
        As in :class:`NeuralEigenClustering`.

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
    >>> from spectralnet_seg.kernels import make_kernel
    >>> X, y = make_blobs(200, centers=3, cluster_std=0.5, random_state=0)
    >>> est = DiscreteNeuralEigenClustering(3, kernel=make_kernel("rbf", gamma=0.5),
    ...                                     hidden_layer_sizes=(32,), max_iter=100,
    ...                                     random_state=0).fit(X)
    >>> est.predict_proba(X).shape
    (200, 3)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEigenClustering._parameter_constraints,
        "temperature_start": [Interval(Real, 0, None, closed="neither")],
        "temperature_end": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, n_clusters=8, *, kernel="knn", network=None,
                 hidden_layer_sizes=(256, 256), fourier_features=0, fourier_scale=1.0,
                 diffusion_steps=1, batch_size=512, max_iter=None, max_epochs=100,
                 learning_rate=1e-3, weight_decay=0.0, orthogonality_weight=None,
                 normalize_penalty=False, temperature_start=1.0, temperature_end=0.3,
                 eigenvalue_momentum=0.9, device="auto", random_state=None, verbose=False,
                 checkpoint_dir=None, checkpoint_every=100):
        self.n_clusters = n_clusters
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
        self.temperature_start = temperature_start
        self.temperature_end = temperature_end
        self.eigenvalue_momentum = eigenvalue_momentum
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ hooks
    # Clusters have no order: the penalty pushes both members of each pair apart. With the
    # eigenfunction form's stop-gradient the first output is free to become the kernel's
    # top eigenfunction, the constant — one cluster holding every point — and the others can
    # then only lower their penalty by vanishing (on 3 blobs: a single cluster, ARI 0).
    _penalty_stop_gradient = False

    def _n_outputs(self) -> int:
        return self.n_clusters

    def _default_orthogonality_weight(self) -> float:
        # The paper's 20 / K, capped: see ``orthogonality_weight`` for what it fixes.
        return min(20.0 / self.n_clusters, _MAX_DEFAULT_ORTHOGONALITY_WEIGHT)

    def _fingerprint_extra(self) -> dict:
        return {"temperature": (self.temperature_start, self.temperature_end)}

    def _temperature(self, run: _TrainingRun) -> float:
        return cosine_temperature(run.step, run.total_steps, self.temperature_start,
                                  self.temperature_end)

    def _training_outputs(self, run: _TrainingRun, raw: torch.Tensor) -> torch.Tensor:
        soft = gumbel_softmax(raw, self._temperature(run), generator=run.generator)
        return run.normalizer(soft)

    def _finalize(self, X, run: _TrainingRun, *, refresh_statistics: bool) -> None:
        self.eigenvalues_ = self._eigenvalue_estimates(run)
        self.embedding_ = self._raw_outputs(X).double().numpy()
        self.labels_ = self.embedding_.argmax(axis=1)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        self.n_active_clusters_ = int(np.count_nonzero(self.cluster_sizes_))

    # ------------------------------------------------------------------ inference
    def transform(self, X):
        """Cluster logits z of each row (use :meth:`predict_proba` for probabilities).

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
        labels : ndarray of shape (n_samples,)
        """
        return self.transform(X).argmax(axis=1)

    def predict_proba(self, X):
        """Soft assignments ``softmax(z / temperature_end)``.

        Parameters
        ----------
        X : array-like, np.memmap or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_clusters)
            Rows sum to one.
        """
        logits = torch.from_numpy(self.transform(X))
        return torch.softmax(logits / self.temperature_end, dim=1).numpy()
