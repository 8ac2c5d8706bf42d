"""Neural eigenfunctions: ψ networks, the NeuralEF loss, normalisation, discretisation, diagnostics."""

from .diagnostics import AlignmentReport, eigenfunction_alignment, orthogonality_error
from .discretize import cosine_temperature, gumbel_softmax
from .losses import neuralef_loss, rayleigh_matrices
from .networks import MLPEigenfunctions, TransformerEigenfunctions, orthogonal_head
from .normalization import ColumnNormalization

__all__ = [
    "AlignmentReport",
    "ColumnNormalization",
    "MLPEigenfunctions",
    "TransformerEigenfunctions",
    "cosine_temperature",
    "eigenfunction_alignment",
    "gumbel_softmax",
    "neuralef_loss",
    "orthogonal_head",
    "orthogonality_error",
    "rayleigh_matrices",
]
