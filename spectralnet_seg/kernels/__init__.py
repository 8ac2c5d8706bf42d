"""Affinity kernels shared by every estimator (see :class:`Kernel`).

Importing this package registers the built-in kernels: ``"knn"``, ``"rbf"``, ``"cosine"``,
``"precomputed"``, ``"sum"``, ``"spatial_color"`` and ``"paper"`` (see :func:`list_kernels`).
"""

from ._base import Kernel, degree_normalize, degree_normalize_dense
from ._registry import list_kernels, make_kernel, register_kernel, resolve_kernel
from .combined import SumKernel
from .knn import KNNKernel
from .precomputed import PrecomputedKernel
from .rbf import CosineKernel, RBFKernel
from .spatial_color import (
    SpatialColorKernel,
    TokenContext,
    as_token_context,
    paper_kernel,
    requires_context,
)

__all__ = [
    "CosineKernel",
    "KNNKernel",
    "Kernel",
    "PrecomputedKernel",
    "RBFKernel",
    "SpatialColorKernel",
    "SumKernel",
    "TokenContext",
    "as_token_context",
    "degree_normalize",
    "degree_normalize_dense",
    "list_kernels",
    "make_kernel",
    "paper_kernel",
    "register_kernel",
    "requires_context",
    "resolve_kernel",
]
