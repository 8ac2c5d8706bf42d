"""The discrete estimator's second phase: a cluster head on the eigenfunctions, fine-tuned.

After the eigenfunction phase, the best of ``n_init`` k-means partitions of the learned
eigenfunctions (by normalised cut on the training graph) becomes a linear head whose argmax
is that partition ([`_nearest_centroid_head`][_nearest_centroid_head]); the network with its
head is then trained on the discrete objective for ``fine_tune_iter`` steps, and the start
is kept when fine-tuning emptied one of its clusters or made the normalised cut worse.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from .._utils import user_stacklevel
from ..eigenfunctions import ColumnNormalization
from ..metrics import normalized_cut
from . import _neural_io as io
from ._convergence import PlateauSchedule
from ._neural_training import _EIGENVALUE_MOMENTUM
from ._pair_sampler import GraphPairSampler
from ._training_run import _TrainingRun

#: Typical logit margin of the head initialised from k-means (softmax confidence ~ 98 %).
_INITIAL_LOGIT_MARGIN = 4.0
#: Fine-tuning learning rate relative to ``learning_rate``: the start is already good.
_FINE_TUNE_LR_FACTOR = 0.3


class DiscreteFineTuningMixin:
    """The cluster head and fine-tuning phase of
    [`DiscreteNeuralEigenClustering`][spectralnet_seg.cluster.DiscreteNeuralEigenClustering]."""

    def _best_partition(self, embedding: np.ndarray, graph) -> KMeans:
        """The best of ``n_init`` single-start k-means by normalised cut (or by inertia)."""
        seeds = np.random.RandomState(self._label_seed).randint(0, 2**31 - 1, size=self.n_init)
        best, best_score = None, np.inf
        with warnings.catch_warnings(record=True) as caught:  # once, not once per start
            warnings.simplefilter("always")
            for seed in seeds:
                km = KMeans(self.n_clusters, n_init=1, random_state=int(seed)).fit(embedding)
                score = km.inertia_ if graph is None else normalized_cut(graph, km.labels_)
                if score < best_score:
                    best, best_score = km, score
        for category, message in dict.fromkeys((w.category, str(w.message)) for w in caught):
            warnings.warn(message, category, stacklevel=user_stacklevel())
        return best

    def _fine_tune(self, X, run: _TrainingRun, graph) -> None:
        """Head from the best k-means partition of the eigenfunctions, then discrete training."""
        raw = self._raw_outputs(X).double().numpy()
        _, output_map = self._eigenfunction_map(raw, graph, run)
        embedding = raw @ output_map
        centers = self._best_partition(embedding, graph).cluster_centers_
        head = _nearest_centroid_head(embedding, centers, output_map)
        network = nn.Sequential(self.network_, head)
        self.network_ = network
        self.fine_tuned_ = False
        if self.fine_tune_iter == 0:
            self._optimizer_state = self._new_optimizer(network).state_dict()  # fresh moments
            _forget_eigenfunction_estimates(self, run)
            return
        start_state = copy.deepcopy(network.state_dict())
        start_labels = self._argmax(X)
        self._phase = "discrete"
        device = run.device
        network.to(device)
        schedule = PlateauSchedule(max_iter=self.fine_tune_iter, tol=self.tol,
                                   n_iter_no_change=self.n_iter_no_change,
                                   check_every=self.fine_tune_iter + 1,
                                   anneal_start=0, anneal_length=self.fine_tune_iter)
        tune = _TrainingRun(
            network=network, normalizer=ColumnNormalization(
                self.n_clusters, momentum=_EIGENVALUE_MOMENTUM).to(device),
            optimizer=torch.optim.Adam(network.parameters(),
                                       lr=self.learning_rate * _FINE_TUNE_LR_FACTOR,
                                       weight_decay=self.weight_decay),
            generator=run.generator, device=device, batch_size=run.batch_size,
            n_samples=run.n_samples, learning_rate=self.learning_rate * _FINE_TUNE_LR_FACTOR,
            diffusion_steps=1, schedule=schedule,
            sampler=None if graph is None else GraphPairSampler(graph),
            context=run.context, model=self._lockstep_model(network))
        self._train(tune, X)
        network.eval().cpu()
        self.n_iter_ += tune.step
        self.loss_curve_ += tune.loss_curve
        self._generator_state = tune.generator.get_state()  # its draws were made either way
        if not _fine_tuning_helps(graph, start_labels, self._argmax(X)):
            # The discrete objective made it worse: back to the start, and to the start's
            # training state, as with fine_tune_iter=0 (the tuned run's Adam moments and
            # statistics would otherwise meet the reverted weights in a later partial_fit).
            network.load_state_dict(start_state)
            self._optimizer_state = self._new_optimizer(network).state_dict()
            _forget_eigenfunction_estimates(self, run)
            return
        # What a later partial_fit continues from: the fine-tuned network's training state.
        self._eigenvalue_ema = tune.eigenvalues
        self._optimizer_state = io.to_cpu(tune.optimizer.state_dict())
        self.normalizer_ = tune.normalizer.eval().cpu()
        self.diffusion_steps_ = 1
        run.eigenvalues, run.diffusion_steps = tune.eigenvalues, 1
        self.fine_tuned_ = True

    def _argmax(self, X) -> np.ndarray:
        return self._raw_outputs(X).numpy().argmax(axis=1)


def _forget_eigenfunction_estimates(estimator, run: _TrainingRun) -> None:
    """Drop the eigenfunction phase's running eigenvalues when no discrete training is kept.

    They are the K eigenvalues of the eigenfunctions (1 first), in eigen order, not the
    clusters' ``assoc / vol``: reported as ``eigenvalues_`` under the minibatch sampler, they
    described another model; a later ``partial_fit`` starts a fresh running estimate instead.
    """
    run.eigenvalues = None
    estimator._eigenvalue_ema = None


def _nearest_centroid_head(embedding: np.ndarray, centers: np.ndarray,
                           output_map: np.ndarray) -> nn.Linear:
    """``Linear(K, K)`` on raw outputs whose argmax is the nearest centre of the embedding.

    ``argmin_k ‖e − c_k‖² = argmax_k (2 e·c_k − ‖c_k‖²)`` with ``e = raw @ output_map``:
    linear in the raw outputs. The logits are scaled so that the median margin between the
    best and the second-best cluster is [`_INITIAL_LOGIT_MARGIN`][_INITIAL_LOGIT_MARGIN].
    """
    logits = 2.0 * embedding @ centers.T - np.square(centers).sum(axis=1)
    top_two = np.sort(logits, axis=1)[:, -2:]
    margin = float(np.median(top_two[:, 1] - top_two[:, 0])) if logits.shape[1] > 1 else 1.0
    scale = _INITIAL_LOGIT_MARGIN / margin if margin > 0 else 1.0
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten just below
        head = nn.Linear(centers.shape[1], centers.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor((2.0 * scale * output_map @ centers.T).T,
                                          dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(-scale * np.square(centers).sum(axis=1),
                                        dtype=torch.float32))
    return head


def _fine_tuning_helps(graph, start: np.ndarray, tuned: np.ndarray) -> bool:
    """Whether the fine-tuned labels are at least as good a K-way partition as the start's.

    No cluster of the start may be emptied: a normalised cut is a sum over the clusters, so
    merging clusters always lowers it and would otherwise pass as an improvement (on photos
    the discrete objective merged 12 regions into 3 this way). Then, with the training
    graph, the normalised cut must not be larger.
    """
    if np.unique(tuned).size < np.unique(start).size:
        return False
    return graph is None or normalized_cut(graph, tuned) <= normalized_cut(graph, start)
