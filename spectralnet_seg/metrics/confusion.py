"""Label maps in, pixel counts out: the class × cluster confusion matrix.

Label maps may have any shape (``(n,)``, ``(h, w)``, ``(n_images, h, w)``), or be lists of
maps of different sizes; pixels whose ground truth equals ``ignore_index`` (255 by
default) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._utils import is_integer

__all__ = ["check_ignore_index", "confusion_matrix"]


def _flatten_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Ravel two label maps (or two lists of maps) of matching shapes into 1-D int arrays."""
    if isinstance(y_true, Sequence) and not isinstance(y_true, str) and len(y_true) and \
            np.ndim(y_true[0]) >= 1 and isinstance(y_pred, Sequence):
        if len(y_true) != len(y_pred):
            raise ValueError(f"y_true has {len(y_true)} label maps but y_pred has "
                             f"{len(y_pred)}.")
        pairs = [_flatten_pair(np.asarray(t), np.asarray(p)) for t, p in zip(y_true, y_pred, strict=True)]
        return (np.concatenate([t for t, _ in pairs]),
                np.concatenate([p for _, p in pairs]))
    try:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    except ValueError as err:  # maps of different sizes, not paired map by map
        raise ValueError("y_true and y_pred must be label maps of the same shape, or two "
                         "lists of as many maps, each pair of the same shape (a list of "
                         f"maps of different sizes needs a list of predictions): {err}"
                         ) from None
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} "
                         f"and {y_pred.shape}.")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and not (np.issubdtype(y.dtype, np.integer) or
                           (np.issubdtype(y.dtype, np.floating) and
                            np.all(np.mod(y, 1) == 0))):
            raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}.")
    return y_true.ravel().astype(np.int64), y_pred.ravel().astype(np.int64)


def check_count(count, name: str, *, optional: bool = False) -> None:
    """A number of classes or clusters: a non-negative integer (or None if ``optional``);
    a float such as 3.0 failed inside ``np.bincount``."""
    if count is None and optional:
        return
    if not is_integer(count) or count < 0:
        raise ValueError(f"{name} must be a non-negative integer"
                         f"{' or None' if optional else ''}, got {count!r}.")


def check_ignore_index(ignore_index) -> int | None:
    """``ignore_index`` as an int, or None; anything else would silently ignore nothing."""
    if ignore_index is not None and not is_integer(ignore_index):
        raise ValueError(f"ignore_index must be an integer label or None, got "
                         f"{ignore_index!r}.")
    return None if ignore_index is None else int(ignore_index)


def _drop_ignored(t: np.ndarray, p: np.ndarray, ignore_index
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of flattened ``(y_true, y_pred)`` whose truth is not ``ignore_index``."""
    ignore_index = check_ignore_index(ignore_index)
    if ignore_index is None:
        return t, p
    keep = t != ignore_index
    return t[keep], p[keep]


def confusion_matrix(y_true, y_pred, n_classes: int | None = None,
                     n_clusters: int | None = None, ignore_index: int | None = 255
                     ) -> np.ndarray:
    """Co-occurrence counts of ground-truth classes and predicted clusters.

    Parameters
    ----------
    y_true : array-like of int, any shape, or list of such arrays
        Ground-truth class ids in ``[0, n_classes)``, or ``ignore_index``.
    y_pred : array-like of int, same shape as ``y_true``
        Cluster (or class) ids in ``[0, n_clusters)``.
    n_classes : int, optional
        Number of classes (rows); ``max(y_true) + 1`` over non-ignored pixels by default.
    n_clusters : int, optional
        Number of clusters (columns); ``max(y_pred) + 1`` by default, over every pixel
        (a cluster seen only under ignored pixels still gets its column).
    ignore_index : int or None, default=255
        Ground-truth value of pixels to leave out; None keeps every pixel.

    Returns
    -------
    confusion : ndarray of shape (n_classes, n_clusters), int64
        ``confusion[c, k]`` = number of pixels of class ``c`` predicted as cluster ``k``.

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, 255], [1, 1, 0, 0])
    array([[0, 2],
           [1, 0]])
    """
    for name, count in (("n_classes", n_classes), ("n_clusters", n_clusters)):
        check_count(count, name, optional=True)
    t, p = _flatten_pair(y_true, y_pred)
    if n_clusters is None:  # before dropping pixels: every cluster of y_pred gets a column
        n_clusters = int(p.max()) + 1 if p.size else 0
    t, p = _drop_ignored(t, p, ignore_index)
    if n_classes is None:
        n_classes = int(t.max()) + 1 if t.size else 0
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(
            f"y_true has labels outside [0, {n_classes}) (min {t.min()}, max {t.max()}); "
            f"set n_classes, or mark unlabelled pixels with ignore_index={ignore_index}.")
    if p.size and (p.min() < 0 or p.max() >= n_clusters):
        raise ValueError(f"y_pred has labels outside [0, {n_clusters}) (min {p.min()}, "
                         f"max {p.max()}); set n_clusters.")
    counts = np.bincount(t * n_clusters + p, minlength=n_classes * n_clusters)
    return counts.reshape(n_classes, n_clusters)
