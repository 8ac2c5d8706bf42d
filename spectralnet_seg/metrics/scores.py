"""Segmentation scores: pixel accuracy and IoU, after matching clusters to classes.

Pixels whose ground truth equals ``ignore_index`` (255 by default) are left out; classes
absent from both truth and prediction have no IoU (NaN, left out of the mean).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from .._utils import user_stacklevel
from .confusion import _drop_ignored, _flatten_pair, check_count, confusion_matrix
from .matching import _check_confusion, _match, check_mapping

__all__ = ["mean_iou", "pixel_accuracy", "scores_with_mapping", "segmentation_scores"]


def _warn_nothing_to_score(n_pixels: float) -> None:
    if n_pixels == 0:
        warnings.warn("no ground-truth pixel to score (every pixel is ignore_index, or the "
                      "input is empty): pixel accuracy and IoU are NaN.",
                      UndefinedMetricWarning, stacklevel=user_stacklevel())


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
    check_count(n_classes, "n_classes")
    if matching is None:
        n_clusters = n_classes if n_clusters is None else n_clusters
    confusion = confusion_matrix(y_true, y_pred, n_classes, n_clusters, ignore_index)
    if matching is None:
        mapping = np.where(np.arange(confusion.shape[1]) < n_classes,
                           np.arange(confusion.shape[1]), -1)
    elif isinstance(matching, str):
        mapping = _match(confusion, matching)
    else:  # a given mapping: scores_with_mapping checks it
        mapping = matching
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
    confusion = _check_confusion(confusion)
    n_classes = confusion.shape[0]
    mapping = check_mapping(mapping, n_clusters=confusion.shape[1], n_classes=n_classes)
    # Class×class confusion: sum the columns of the clusters mapped to each class.
    matched = mapping >= 0
    # Counts keep their dtype: weighted (float) counts are not truncated.
    class_conf = np.zeros((n_classes, n_classes),
                          dtype=np.result_type(confusion.dtype, np.int64))
    np.add.at(class_conf.T, mapping[matched], confusion[:, matched].T)
    _warn_nothing_to_score(float(confusion.sum()))
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
    t, p = _drop_ignored(*_flatten_pair(y_true, y_pred), ignore_index)
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
    check_count(n_classes, "n_classes")
    t, p = _flatten_pair(y_true, y_pred)
    p = np.where((p >= 0) & (p < n_classes), p, n_classes)  # extra "no class" column
    conf = confusion_matrix(t, p, n_classes, n_classes + 1, ignore_index)
    _warn_nothing_to_score(float(conf.sum()))
    _, iou = _scores_from_class_confusion(conf[:, :n_classes], conf.sum(axis=1))
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return (miou, iou) if return_per_class else miou
