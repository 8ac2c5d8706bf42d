"""Cluster→class matching: fit a mapping on a confusion matrix, then apply it.

Clusters carry no class names, so they are first matched to classes on the evaluation set:
one-to-one by [`hungarian_match`][hungarian_match] (K = C) or many-to-one by
[`majority_match`][majority_match] (K > C).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .confusion import confusion_matrix

__all__ = ["apply_mapping", "hungarian_match", "majority_match", "match_clusters"]

MATCHINGS = ("hungarian", "majority")


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one cluster→class mapping maximising the number of matched pixels.

    Parameters
    ----------
    confusion : ndarray of shape (n_classes, n_clusters)
        Output of [`confusion_matrix`][confusion_matrix].

    Returns
    -------
    mapping : ndarray of shape (n_clusters,), int64
        Class of each cluster. With more clusters than classes, the clusters left
        unmatched map to -1 and their pixels count as errors; with fewer, some classes
        receive no cluster (IoU 0 where they occur). Only classes that occur are matched:
        a class without pixels would take a cluster at zero gain, chosen by the order of
        the cluster ids, and its pixels would then count against that absent class.
    """
    confusion = _check_confusion(confusion)
    mapping = np.full(confusion.shape[1], -1, dtype=np.int64)
    present = np.flatnonzero(confusion.sum(axis=1) > 0)
    rows, clusters = linear_sum_assignment(confusion[present], maximize=True)
    mapping[clusters] = present[rows]
    return mapping


def _check_confusion(confusion) -> np.ndarray:
    """A 2-D, finite, non-negative (n_classes, n_clusters) count matrix."""
    confusion = np.asarray(confusion)
    if (confusion.ndim != 2 or confusion.dtype.kind not in "iuf"
            or not np.all(np.isfinite(confusion)) or (confusion < 0).any()):
        raise ValueError(f"confusion must be a 2-D (n_classes, n_clusters) matrix of "
                         f"non-negative counts, got shape {confusion.shape} and dtype "
                         f"{confusion.dtype}")
    return confusion


def majority_match(confusion: np.ndarray) -> np.ndarray:
    """Many-to-one cluster→class mapping: each cluster to the class of highest IoU.

    The IoU of cluster ``k`` and class ``c`` is ``n_ck / (n_c + n_k - n_ck)``; normalising
    the co-occurrence this way keeps large classes from absorbing every cluster.

    Parameters
    ----------
    confusion : ndarray of shape (n_classes, n_clusters)

    Returns
    -------
    mapping : ndarray of shape (n_clusters,), int64
        Class of each cluster; -1 for clusters with no (non-ignored) pixel.
    """
    confusion = _check_confusion(confusion)
    confusion = np.asarray(confusion, dtype=np.float64)
    union = confusion.sum(axis=1, keepdims=True) + confusion.sum(axis=0, keepdims=True) \
        - confusion
    iou = np.divide(confusion, union, out=np.zeros_like(confusion), where=union > 0)
    if confusion.shape[0] == 0:  # no class at all (every pixel ignored): nothing to match
        return np.full(confusion.shape[1], -1, dtype=np.int64)
    mapping = iou.argmax(axis=0).astype(np.int64)
    mapping[confusion.sum(axis=0) == 0] = -1
    return mapping


def match_clusters(y_true, y_pred, method: str = "hungarian", *,
                   n_classes: int | None = None, n_clusters: int | None = None,
                   ignore_index: int | None = 255) -> np.ndarray:
    """Cluster→class mapping fitted on ``(y_true, y_pred)``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, same shape
        Ground-truth classes and predicted clusters (see [`confusion_matrix`][confusion_matrix]).
    method : {"hungarian", "majority"}, default="hungarian"
        [`hungarian_match`][hungarian_match] or [`majority_match`][majority_match].
    n_classes, n_clusters, ignore_index
        See [`confusion_matrix`][confusion_matrix].

    Returns
    -------
    mapping : ndarray of shape (n_clusters,), int64
        Class of each cluster, -1 for unmatched clusters.
    """
    confusion = confusion_matrix(y_true, y_pred, n_classes, n_clusters, ignore_index)
    return _match(confusion, method)


def _match(confusion: np.ndarray, method: str) -> np.ndarray:
    if method == "hungarian":
        return hungarian_match(confusion)
    if method == "majority":
        return majority_match(confusion)
    raise ValueError(f"matching must be one of {MATCHINGS}, None or an array mapping, "
                     f"got {method!r}")


def check_mapping(mapping, *, n_clusters: int | None = None,
                  n_classes: int | None = None) -> np.ndarray:
    """A cluster→class mapping as a 1-D int64 array of class ids, or -1 for unmatched.

    Floats would be truncated and other negatives read as "unmatched": both are refused,
    and so are ids of ``n_classes`` or more and a length other than ``n_clusters``.
    """
    mapping = np.asarray(mapping)
    if mapping.size == 0:  # [] is float64 to numpy: an empty mapping of no clusters
        mapping = mapping.astype(np.int64)
    wrong_length = n_clusters is not None and mapping.shape != (n_clusters,)
    if (mapping.ndim != 1 or wrong_length or mapping.dtype.kind not in "iu"
            or (mapping.size and (mapping.min() < -1 or (
                n_classes is not None and mapping.max() >= n_classes)))):
        values = (f"[{mapping.min()}, {mapping.max()}]" if mapping.size
                  and mapping.dtype.kind in "iuf" else "none")
        upper = "" if n_classes is None else f" in [-1, {n_classes})"
        each = "" if n_clusters is None else f" for each of the {n_clusters} clusters"
        raise ValueError(f"a matching array must be 1-D and hold integer class ids (or -1)"
                         f"{upper}{each}, got shape {mapping.shape}, dtype {mapping.dtype} "
                         f"and values {values}.")
    return mapping.astype(np.int64)


def apply_mapping(y_pred, mapping: np.ndarray, fill: int = 255) -> np.ndarray:
    """Translate cluster ids to class ids; unmatched clusters (-1) become ``fill``.

    Parameters
    ----------
    y_pred : array-like of int, any shape
        Cluster ids in ``[0, len(mapping))``.
    mapping : ndarray of shape (n_clusters,)
        Output of a matching function.
    fill : int, default=255
        Value for pixels of unmatched clusters.

    Returns
    -------
    ndarray of the shape of ``y_pred``
    """
    mapping = check_mapping(mapping)
    y_pred = np.asarray(y_pred)
    if y_pred.size and (y_pred.dtype.kind not in "iu" or y_pred.min() < 0
                        or y_pred.max() >= len(mapping)):
        # A negative id would silently index from the end of the mapping.
        raise ValueError(f"y_pred must hold integer cluster ids in [0, {len(mapping)}), got "
                         f"dtype {y_pred.dtype} and values in [{y_pred.min()}, "
                         f"{y_pred.max()}]")
    out = mapping[y_pred]
    out[out < 0] = fill
    return out
