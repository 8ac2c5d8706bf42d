"""spectralnet_seg: spectral clustering at dataset scale for unsupervised semantic segmentation.

The estimators share one scikit-learn API and one kernel object, so the classic eigsh baseline
and the neural eigenfunction variants are compared on the same affinity:

- [`EigshSpectralClustering`][EigshSpectralClustering] — normalised kNN affinity,
``scipy.sparse.linalg.eigsh``,
  k-means; out-of-sample points by the Nyström extension.
- [`NeuralEigenClustering`][NeuralEigenClustering] — a network ψ trained with the NeuralEF objective
so that its
  outputs are the top eigenfunctions of the kernel; ``predict`` is a forward pass + k-means.
- [`DiscreteNeuralEigenClustering`][DiscreteNeuralEigenClustering] — the discrete variant whose
outputs are cluster
  assignments (argmax of the logits).
"""

from .cluster import (
    DiscreteNeuralEigenClustering,
    EigshSpectralClustering,
    NeuralEigenClustering,
)
from .kernels import (
    CosineKernel,
    KNNKernel,
    PrecomputedKernel,
    RBFKernel,
    SumKernel,
    list_kernels,
    make_kernel,
)

__version__ = "0.1.0"

__all__ = [
    "CosineKernel",
    "DiscreteNeuralEigenClustering",
    "EigshSpectralClustering",
    "KNNKernel",
    "NeuralEigenClustering",
    "PrecomputedKernel",
    "RBFKernel",
    "SumKernel",
    "__version__",
    "list_kernels",
    "make_kernel",
]
