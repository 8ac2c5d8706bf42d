"""What a kernel (object or registered name) declares about its inputs.

The tags themselves ([`KernelTags`][spectralnet_seg.kernels.KernelTags]) and their default live
with the contract in ``_base``; this module answers for names too, which needs the registry.
"""

from __future__ import annotations

from ._base import Kernel, KernelTags
from ._registry import make_kernel

__all__ = ["kernel_tags", "requires_context"]


def kernel_tags(kernel: Kernel | str | None) -> KernelTags:
    """The declared [`KernelTags`][KernelTags] of ``kernel``.

    Parameters
    ----------
    kernel : Kernel, str or None
        A kernel object, a registered name (built with its defaults), or None. Objects
        that do not derive from [`Kernel`][Kernel] and declare nothing get the default tags.

    Returns
    -------
    KernelTags

    Examples
    --------
    >>> from spectralnet_seg.kernels import kernel_tags, paper_kernel
    >>> kernel_tags("knn")
    KernelTags(requires_context=False, input_is_affinity=False)
    >>> kernel_tags(paper_kernel()).requires_context  # through the SumKernel's members
    True
    """
    if isinstance(kernel, str):
        kernel = make_kernel(kernel)
    declare = getattr(kernel, "__kernel_tags__", None)
    return declare() if declare is not None else KernelTags()


def requires_context(kernel: Kernel | str | None) -> bool:
    """Whether ``kernel`` (or a member of a combined kernel) needs the token context.

    Shorthand for ``kernel_tags(kernel).requires_context``.
    """
    return kernel_tags(kernel).requires_context
