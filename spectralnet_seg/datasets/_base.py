"""The segmentation dataset contract and the dataset registry.

A [`SegmentationDataset`][SegmentationDataset] is an indexable collection of ``(image, mask)``
pairs:

* ``image`` -- ``ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB;
* ``mask`` -- ``ndarray`` of shape ``(H, W)``, dtype ``int64``, class ids in
  ``[0, n_classes)`` and [`IGNORE_INDEX`][IGNORE_INDEX] (255) for pixels that are not scored.

Every dataset also knows ``n_classes`` and ``class_names``, and may carry a ``transform``
callable ``(image, mask) -> (image, mask)`` applied on access (e.g.
[`reco_protocol`][spectralnet_seg.datasets.reco_protocol]).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from numbers import Integral

import numpy as np

from .._registry import Registry

__all__ = ["IGNORE_INDEX", "SegmentationDataset", "register_dataset", "make_dataset",
           "list_datasets"]

IGNORE_INDEX = 255
"""Label of pixels that evaluation skips (unlabelled, void, or outside the class set)."""

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class SegmentationDataset(ABC):
    """Indexable ``(image, mask)`` pairs with a fixed class set.

    Subclasses implement ``__len__``, ``_load`` and the [`class_names`][class_names]
    property; indexing, negative indices, iteration and the transform are handled here.

    Attributes
    ----------
    ignore_index : int
        Mask value of pixels that are not scored, always 255.
    """

    ignore_index: int = IGNORE_INDEX
    transform: Transform | None = None

    @abstractmethod
    def __len__(self) -> int:
        """Number of ``(image, mask)`` pairs."""

    @abstractmethod
    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(H, W, 3) uint8`` and mask ``(H, W) int64`` number ``index`` (0-based)."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Name of each class id, ``class_names[c]`` for ``c`` in ``range(n_classes)``."""

    @property
    def n_classes(self) -> int:
        """Number of classes (mask values other than 255 lie in ``[0, n_classes)``)."""
        return len(self.class_names)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image, mask)`` number ``index`` (negative indices count from the end)."""
        if not isinstance(index, Integral) or isinstance(index, (bool, np.bool_)):
            # True is an Integral (1): dataset[mask_value] would quietly give item 1.
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} images")
        image, mask = self._load(int(index) % n)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    def images(self) -> list[np.ndarray]:
        """All images as a list (loads every item; meant for small datasets)."""
        return [image for image, _ in self]

    def masks(self) -> list[np.ndarray]:
        """All masks as a list (loads every item; meant for small datasets)."""
        return [mask for _, mask in self]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_images={len(self)}, n_classes={self.n_classes})"


def remap_labels(raw: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Map raw label values through a lookup table; values outside the table become 255.

    Parameters
    ----------
    raw : ndarray of shape (H, W), integer
        Label values as stored on disk.
    lookup : ndarray of shape (n_raw,), integer
        ``lookup[v]`` is the class id of raw value ``v`` (255 for ignored values).

    Returns
    -------
    ndarray of shape (H, W), dtype int64
    """
    raw = np.asarray(raw).astype(np.int64, copy=False)
    inside = (raw >= 0) & (raw < lookup.shape[0])
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.int64)
    out[inside] = lookup[raw[inside]]
    return out


# ---------------------------------------------------------------------------- registry
DATASETS = Registry("dataset")
"""The dataset registry (see
[`spectralnet_seg._registry.Registry`][spectralnet_seg._registry.Registry])."""


def register_dataset(name: str) -> Callable:
    """Class decorator that registers a dataset constructor under ``name``."""
    return DATASETS.register(name)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell-style ``pattern``, sorted."""
    return DATASETS.list(pattern)


def make_dataset(name: str, root=None, **params) -> SegmentationDataset:
    """Build a registered dataset by name.

    Parameters
    ----------
    name : str
        One of [`list_datasets`][list_datasets] (e.g. ``"pascal_context"``, ``"cityscapes27"``,
        ``"ade20k"``, ``"cocostuff27"``, ``"mosaics"``).
    root : str or os.PathLike, optional
        Folder of the dataset on disk; not used by the bundled ``"mosaics"``.
    **params
        Other constructor parameters (``split``, ``transform``, ...).

    Returns
    -------
    SegmentationDataset
    """
    constructor = DATASETS.entry(name).constructor
    if root is not None:
        if "root" not in inspect.signature(constructor).parameters:
            raise ValueError(f"dataset {name!r} is generated in memory and takes no root "
                             f"folder; call make_dataset({name!r}) without root")
        params["root"] = root
    return constructor(**params)
