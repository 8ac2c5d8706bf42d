"""Scores computed independently of ``spectralnet_seg.metrics``, to check the pipelines.

``neighbour_recall`` compares two neighbour lists (e.g. against scikit-learn's).

Only scikit-learn's confusion matrix and scipy's assignment solver are used, so a test that
compares the package's scores with these checks the whole path (prediction, upsampling,
ignore pixels, matching, IoU) against a second implementation.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import confusion_matrix


def hungarian_scores(masks, predictions, n_classes: int, ignore_index: int = 255) -> dict:
    """Pixel accuracy and mIoU after the one-to-one matching that maximises matched pixels.

    Only classes that occur in the truth are matched; classes absent from both the truth and
    the matched prediction are left out of the mean.
    """
    y_true = np.concatenate([np.asarray(m).ravel() for m in masks])
    y_pred = np.concatenate([np.asarray(p).ravel() for p in predictions])
    keep = y_true != ignore_index
    y_true, y_pred = y_true[keep], y_pred[keep]
    n_clusters = int(max(y_pred.max() + 1, n_classes))
    # rows: classes, columns: clusters (padded to a square matrix for the assignment)
    size = max(n_classes, n_clusters)
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(size))[:n_classes]
    present = np.flatnonzero(counts.sum(axis=1))  # a class without pixels takes no cluster
    rows, clusters = linear_sum_assignment(counts[present], maximize=True)
    mapped = np.full(size, -1)
    mapped[clusters] = present[rows]
    y_mapped = mapped[y_pred]
    iou = []
    for c in range(n_classes):
        truth, pred = y_true == c, y_mapped == c
        union = np.count_nonzero(truth | pred)
        if union:
            iou.append(np.count_nonzero(truth & pred) / union)
    return {"pixel_accuracy": float(np.mean(y_true == y_mapped)), "mean_iou": float(np.mean(iou))}


def neighbour_recall(found: np.ndarray, true: np.ndarray) -> float:
    """Mean fraction of each row's true neighbour ids that ``found`` lists (recall@k).

    Parameters
    ----------
    found, true : ndarray of shape (n_queries, k)
        Neighbour ids per query.
    """
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, true, strict=True)]))
