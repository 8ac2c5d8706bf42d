"""Scores for unsupervised segmentation: cluster→class matching, pixel accuracy, IoU.

Clusters carry no class names, so they are first matched to classes on the evaluation set:

* [`hungarian_match`][hungarian_match] — one-to-one, maximising the matched pixel count
  (``scipy.optimize.linear_sum_assignment``); the usual choice when K = C.
* [`majority_match`][majority_match] — many-to-one: each cluster goes to the class it overlaps best
by
  IoU (the "majority voting" of Deng & Luo, 2023); the usual choice when K > C.

Label maps may have any shape (``(n,)``, ``(h, w)``, ``(n_images, h, w)``), or be lists of
maps of different sizes; pixels whose ground truth equals ``ignore_index`` (255 by
default) are left out everywhere. NMI and ARI are re-exported from scikit-learn.

[`normalized_cut`][normalized_cut] scores a partition of a graph instead of against ground truth:
the
objective that spectral clustering relaxes (Shi & Malik, 2000), which compares clusterings
of the same affinity (e.g. an image's pixel graph) without labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "adjusted_rand_score",
    "apply_mapping",
    "confusion_matrix",
    "hungarian_match",
    "majority_match",
    "match_clusters",
    "mean_iou",
    "normalized_cut",
    "normalized_mutual_info_score",
    "pixel_accuracy",
    "scores_with_mapping",
    "segmentation_scores",
]

MATCHINGS = ("hungarian", "majority")


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
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} "
                         f"and {y_pred.shape}.")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and not (np.issubdtype(y.dtype, np.integer) or
                           (np.issubdtype(y.dtype, np.floating) and
                            np.all(np.mod(y, 1) == 0))):
            raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}.")
    return y_true.ravel().astype(np.int64), y_pred.ravel().astype(np.int64)


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
        Number of clusters (columns); ``max(y_pred) + 1`` by default.
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
    t, p = _flatten_pair(y_true, y_pred)
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    if n_classes is None:
        n_classes = int(t.max()) + 1 if t.size else 0
    if n_clusters is None:
        n_clusters = int(p.max()) + 1 if p.size else 0
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(
            f"y_true has labels outside [0, {n_classes}) (min {t.min()}, max {t.max()}); "
            f"set n_classes, or mark unlabelled pixels with ignore_index={ignore_index}.")
    if p.size and (p.min() < 0 or p.max() >= n_clusters):
        raise ValueError(f"y_pred has labels outside [0, {n_clusters}) (min {p.min()}, "
                         f"max {p.max()}); set n_clusters.")
    counts = np.bincount(t * n_clusters + p, minlength=n_classes * n_clusters)
    return counts.reshape(n_classes, n_clusters)


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
        receive no cluster (IoU 0 where they occur).
    """
    confusion = np.asarray(confusion)
    mapping = np.full(confusion.shape[1], -1, dtype=np.int64)
    classes, clusters = linear_sum_assignment(confusion, maximize=True)
    mapping[clusters] = classes
    return mapping


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
    mapping = np.asarray(mapping, dtype=np.int64)
    out = mapping[np.asarray(y_pred)]
    out[out < 0] = fill
    return out


def _warn_nothing_to_score(n_pixels: int) -> None:
    if n_pixels == 0:
        warnings.warn("no ground-truth pixel to score (every pixel is ignore_index, or the "
                      "input is empty): pixel accuracy and IoU are NaN.",
                      UndefinedMetricWarning, stacklevel=3)


def _scores_from_class_confusion(class_conf: np.ndarray, gt_total: np.ndarray
                                 ) -> tuple[float, np.ndarray]:
    """Pixel accuracy and per-class IoU from a class×class confusion (rows = truth).

    ``gt_total`` counts every non-ignored pixel of each class, including those predicted
    as "no class", so unmatched clusters lower both scores.
    """
    tp = np.diag(class_conf).astype(np.float64)
    pred_total = class_conf.sum(axis=0)
    union = gt_total + pred_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        # Classes absent from both truth and prediction have no IoU (NaN, excluded from
        # the mean), as in mmsegmentation.
        iou = np.where(union > 0, tp / union, np.nan)
    n = gt_total.sum()
    accuracy = float(tp.sum() / n) if n else float("nan")
    return accuracy, iou


def segmentation_scores(y_true, y_pred, n_classes: int, *, matching="hungarian",
                        n_clusters: int | None = None, ignore_index: int | None = 255
                        ) -> dict:
    """Pixel accuracy and IoU of a clustering after matching clusters to classes.

    The matching is fitted on the same data it scores (the standard protocol for
    unsupervised segmentation).

    Parameters
    ----------
    y_true : array-like of int, any shape, or list of such arrays
        Ground-truth classes in ``[0, n_classes)`` or ``ignore_index``.
    y_pred : array-like of int, same shape
        Predicted cluster ids in ``[0, n_clusters)``.
    n_classes : int
        Number of classes.
    matching : {"hungarian", "majority"}, None or ndarray of shape (n_clusters,), \
default="hungarian"
        How clusters become classes: fitted by [`hungarian_match`][hungarian_match] or
        [`majority_match`][majority_match], the identity (None: ``y_pred`` already holds class ids),
        or a given mapping (-1 = unmatched).
    n_clusters : int, optional
        Number of clusters; ``max(y_pred) + 1`` by default.
    ignore_index : int or None, default=255
        Ground-truth value of pixels to leave out.

    Returns
    -------
    scores : dict
        ``pixel_accuracy`` (float), ``mean_iou`` (float, mean over classes present in
        the truth or the prediction), ``per_class_iou`` (ndarray of shape (n_classes,),
        NaN for absent classes), ``mapping`` (ndarray of shape (n_clusters,)) and
        ``confusion`` (ndarray of shape (n_classes, n_clusters), class × cluster counts).

    Examples
    --------
    >>> s = segmentation_scores([0, 0, 1, 1], [5, 5, 2, 2], n_classes=2, n_clusters=6)
    >>> s["pixel_accuracy"], s["mean_iou"]
    (1.0, 1.0)
    """
    if matching is None:
        n_clusters = n_classes if n_clusters is None else n_clusters
    confusion = confusion_matrix(y_true, y_pred, n_classes, n_clusters, ignore_index)
    if matching is None:
        mapping = np.where(np.arange(confusion.shape[1]) < n_classes,
                           np.arange(confusion.shape[1]), -1)
    elif isinstance(matching, str):
        mapping = _match(confusion, matching)
    else:
        mapping = np.asarray(matching, dtype=np.int64)
        if mapping.shape != (confusion.shape[1],) or mapping.max(initial=-1) >= n_classes:
            raise ValueError(f"a matching array must have shape ({confusion.shape[1]},) "
                             f"with values in [-1, {n_classes}), got shape {mapping.shape}.")
    return {**scores_with_mapping(confusion, mapping), "confusion": confusion}


def scores_with_mapping(confusion: np.ndarray, mapping: np.ndarray) -> dict:
    """Pixel accuracy and IoU of a class × cluster confusion under a cluster→class mapping.

    Parameters
    ----------
    confusion : ndarray of shape (n_classes, n_clusters)
        Pixel counts (see [`confusion_matrix`][confusion_matrix]).
    mapping : ndarray of shape (n_clusters,)
        Class of each cluster, -1 for unmatched clusters (whose pixels still count against
        their true class).

    Returns
    -------
    dict
        ``pixel_accuracy``, ``mean_iou`` (over classes present in truth or prediction),
        ``per_class_iou`` (ndarray of shape (n_classes,), NaN for absent classes) and
        ``mapping``.
    """
    n_classes = confusion.shape[0]
    # Class×class confusion: sum the columns of the clusters mapped to each class.
    matched = mapping >= 0
    class_conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(class_conf.T, mapping[matched], confusion[:, matched].T)
    _warn_nothing_to_score(int(confusion.sum()))
    accuracy, iou = _scores_from_class_confusion(class_conf, confusion.sum(axis=1))
    return {
        "pixel_accuracy": accuracy,
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "per_class_iou": iou,
        "mapping": mapping,
    }


def pixel_accuracy(y_true, y_pred, *, ignore_index: int | None = 255) -> float:
    """Fraction of non-ignored pixels whose predicted class equals the true class.

    Parameters
    ----------
    y_true, y_pred : array-like of int, same shape
        Ground-truth and predicted *class* ids (map clusters first, see
        [`apply_mapping`][apply_mapping]). Predictions outside the true classes count as errors.
    ignore_index : int or None, default=255
        Ground-truth value of pixels to leave out.

    Returns
    -------
    float
    """
    t, p = _flatten_pair(y_true, y_pred)
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    _warn_nothing_to_score(t.size)
    return float(np.mean(t == p)) if t.size else float("nan")


def mean_iou(y_true, y_pred, n_classes: int, *, ignore_index: int | None = 255,
             return_per_class: bool = False):
    """Mean intersection-over-union over classes, for class-id predictions.

    Parameters
    ----------
    y_true, y_pred : array-like of int, same shape
        Ground-truth and predicted *class* ids. Predicted values outside
        ``[0, n_classes)`` (e.g. ``ignore_index`` from [`apply_mapping`][apply_mapping]) mean
        "no class": they count against the true class only.
    n_classes : int
        Number of classes.
    ignore_index : int or None, default=255
        Ground-truth value of pixels to leave out.
    return_per_class : bool, default=False
        Also return the per-class IoU (NaN for classes absent from truth and prediction).

    Returns
    -------
    miou : float
    per_class_iou : ndarray of shape (n_classes,)
        Only when ``return_per_class=True``.
    """
    t, p = _flatten_pair(y_true, y_pred)
    p = np.where((p >= 0) & (p < n_classes), p, n_classes)  # extra "no class" column
    conf = confusion_matrix(t, p, n_classes, n_classes + 1, ignore_index)
    _warn_nothing_to_score(int(conf.sum()))
    _, iou = _scores_from_class_confusion(conf[:, :n_classes], conf.sum(axis=1))
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return (miou, iou) if return_per_class else miou


def normalized_cut(affinity, labels) -> float:
    """Normalised cut of a partition of a graph (Shi & Malik, 2000).

    ``Ncut = Σ_k cut(C_k, V \\ C_k) / vol(C_k)``, where ``cut(A, B) = Σ_{i∈A, j∈B} w_ij``
    and ``vol(C) = Σ_{i∈C} d_i`` with the degrees ``d = W 1`` (self-loops count in the
    volume, never in a cut). It lies in ``[0, K)`` for K clusters; lower is better, 0
    when no edge joins two clusters. Normalised spectral clustering minimises a relaxation
    of it, so it compares partitions of one graph without ground truth.

    Parameters
    ----------
    affinity : {array-like, sparse matrix} of shape (n_samples, n_samples)
        Symmetric, non-negative, finite affinity ``W``.
    labels : array-like of shape (n_samples,)
        Cluster of each node (any integer ids).

    Returns
    -------
    float
        The normalised cut. A cluster of zero volume (isolated nodes only) has no edge to
        cut and adds 0.

    Raises
    ------
    ValueError
        If ``affinity`` is not square, symmetric, non-negative and finite, or ``labels``
        does not have one entry per node.

    References
    ----------
    J. Shi, J. Malik, "Normalized Cuts and Image Segmentation", IEEE TPAMI 22(8), 2000.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[0, 1, 0.1], [1, 0, 0], [0.1, 0, 0]])
    >>> round(normalized_cut(W, [0, 0, 1]), 4)  # 0.1 / 2.1 + 0.1 / 0.1
    1.0476
    """
    from sklearn.utils import check_array

    W = sp.csr_matrix(check_array(affinity, accept_sparse=["csr", "csc", "coo"],
                                  dtype=np.float64, input_name="affinity"))
    n = W.shape[0]
    if W.shape[1] != n:
        raise ValueError(f"affinity must be square (n_samples, n_samples), got {W.shape}.")
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"affinity has negative entries (min {W.data.min():.3g}).")
    asym = abs(W - W.T)
    if asym.nnz and asym.max() > 1e-8 * max(abs(W).max(), 1.0):
        raise ValueError(f"affinity must be symmetric (max |W - W.T| = {asym.max():.3g}).")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per node), got {labels.shape}.")
    _, codes = np.unique(labels, return_inverse=True)
    W = W.tocoo()
    same = codes[W.row] == codes[W.col]
    n_clusters = int(codes.max()) + 1 if n else 0
    within = np.bincount(codes[W.row[same]], weights=W.data[same], minlength=n_clusters)
    volume = np.bincount(codes[W.row], weights=W.data, minlength=n_clusters)
    cut = volume - within
    safe = volume > 0
    return float(np.sum(cut[safe] / volume[safe]))
