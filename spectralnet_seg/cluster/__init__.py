"""Spectral clustering estimators: the eigsh baseline and the neural eigenfunction variants."""

from ._assign import assign_labels, cluster_qr, nearest_centroid, normalize_embedding
from ._checkpoints import CheckpointError, CheckpointWarning
from ._discrete import DiscreteNeuralEigenClustering
from ._eigsh import EigshSpectralClustering
from ._neural import NeuralEigenClustering
from ._spectral_embedding import (
    DisconnectedGraphWarning,
    EigenSolverConvergenceError,
    IsolatedPointWarning,
    normalized_affinity,
    nystrom_extension,
    spectral_clustering,
    spectral_embedding,
)

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "DiscreteNeuralEigenClustering",
    "NeuralEigenClustering",
    "DisconnectedGraphWarning",
    "EigenSolverConvergenceError",
    "EigshSpectralClustering",
    "IsolatedPointWarning",
    "assign_labels",
    "cluster_qr",
    "nearest_centroid",
    "normalize_embedding",
    "normalized_affinity",
    "nystrom_extension",
    "spectral_clustering",
    "spectral_embedding",
]
