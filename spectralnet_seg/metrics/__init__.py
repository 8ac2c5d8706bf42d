"""Scores for unsupervised segmentation: cluster→class matching, pixel accuracy, IoU.

Clusters carry no class names, so they are first matched to classes on the evaluation set:

* [`hungarian_match`][hungarian_match] — one-to-one, maximising the matched pixel count
  (``scipy.optimize.linear_sum_assignment``); the usual choice when K = C.
* [`majority_match`][majority_match] — many-to-one: each cluster goes to the class it overlaps best
by
  IoU (the "majority voting" of Deng & Luo, 2023); the usual choice when K > C.

Label maps may have any shape (``(n,)``, ``(h, w)``, ``(n_images, h, w)``), or be lists of
maps of different sizes; pixels whose ground truth equals ``ignore_index`` (255 by
default) are left out by every function of this package. NMI and ARI are scikit-learn's,
re-exported unchanged: they score every pixel they are given, so drop the ignored ones
first (``keep = y_true != 255``).

[`normalized_cut`][normalized_cut] scores a partition of a graph instead of against ground truth:
the
objective that spectral clustering relaxes (Shi & Malik, 2000), which compares clusterings
of the same affinity (e.g. an image's pixel graph) without labels.

The functions live in one module per job and are gathered here:

- ``confusion`` — label maps in, class × cluster pixel counts out;
- ``matching`` — cluster→class mappings fitted on those counts, and applying them;
- ``scores`` — pixel accuracy and IoU, after a matching or on class ids;
- ``graph`` — the normalised cut of a partition of a graph.
"""

from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .confusion import _flatten_pair as _flatten_pair
from .confusion import confusion_matrix
from .graph import normalized_cut
from .matching import MATCHINGS as MATCHINGS
from .matching import _match as _match
from .matching import apply_mapping, hungarian_match, majority_match, match_clusters
from .scores import _scores_from_class_confusion as _scores_from_class_confusion
from .scores import _warn_nothing_to_score as _warn_nothing_to_score
from .scores import mean_iou, pixel_accuracy, scores_with_mapping, segmentation_scores

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
