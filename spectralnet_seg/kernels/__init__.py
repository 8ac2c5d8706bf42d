"""Affinity kernels shared by every estimator (see :class:`Kernel`).

Importing this package registers the built-in kernels: ``"knn"``, ``"rbf"``, ``"cosine"``,
``"precomputed"`` and ``"sum"`` (see :func:`list_kernels`).
"""

from ._base import Kernel, degree_normalize, degree_normalize_dense
from ._registry import list_kernels, make_kernel, register_kernel, resolve_kernel
from .combined import SumKernel
from .knn import KNNKernel
from .precomputed import PrecomputedKernel
from .rbf import CosineKernel, RBFKernel

__all__ = [
    "CosineKernel",
    "KNNKernel",
    "Kernel",
    "PrecomputedKernel",
    "RBFKernel",
    "SumKernel",
    "degree_normalize",
    "degree_normalize_dense",
    "list_kernels",
    "make_kernel",
    "register_kernel",
    "resolve_kernel",
]
