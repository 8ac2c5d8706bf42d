"""Score a [`Segmenter`][spectralnet_seg.segmentation.Segmenter] on a labelled dataset.

The protocol of unsupervised semantic segmentation: predict every image of the evaluation
set, accumulate one confusion matrix (classes × clusters) over the whole set, fit the
cluster→class mapping on it (Hungarian one-to-one, or majority vote many-to-one), then
report pixel accuracy and (mean) IoU. Images can first be brought to the ReCo protocol
(short side 320, centre crop 320) or predicted by sliding windows over the resized image.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from numbers import Integral

import numpy as np
from sklearn.exceptions import NotFittedError, UndefinedMetricWarning
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from ._utils import is_integer, progress, user_stacklevel
from .datasets.transforms import reco_protocol, resize_short_side
from .images import load_image
from .metrics import _match, confusion_matrix, scores_with_mapping

__all__ = ["evaluate", "scores_from_confusion", "sliding_window_scores"]


def scores_from_confusion(confusion: np.ndarray, matching: str = "majority") -> dict:
    """Cluster→class mapping and scores from a class × cluster confusion matrix.

    Parameters
    ----------
    confusion : ndarray of shape (n_classes, n_clusters)
        Pixel counts (see
        [`spectralnet_seg.metrics.confusion_matrix`][spectralnet_seg.metrics.confusion_matrix]).
    matching : {"majority", "hungarian"}, default="majority"
        Many-to-one vote by IoU, or one-to-one assignment.

    Returns
    -------
    dict
        ``pixel_accuracy``, ``mean_iou`` (over classes present in truth or prediction),
        ``per_class_iou`` (ndarray of shape (n_classes,), NaN for absent classes) and
        ``mapping`` (ndarray of shape (n_clusters,), -1 = unmatched cluster).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must have shape (n_classes, n_clusters), got "
                         f"{confusion.shape}")
    if confusion.dtype.kind not in "iuf" or (confusion.size and (
            not np.isfinite(confusion).all() or confusion.min() < 0)):
        raise ValueError("confusion must hold finite, non-negative (pixel) counts.")
    if confusion.dtype.kind != "f":  # float (weighted) counts are kept, not truncated
        confusion = confusion.astype(np.int64)
    if matching not in ("majority", "hungarian"):
        raise ValueError(f"matching must be 'majority' or 'hungarian', got {matching!r}")
    return scores_with_mapping(confusion, _match(confusion, matching))


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``[0, length)``; the last window is flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def sliding_window_scores(segmenter, image: np.ndarray, *, window: int,
                          stride: int) -> np.ndarray:
    """Full-resolution label scores of one image, averaged over overlapping windows.

    Parameters
    ----------
    segmenter : Segmenter
        Fitted segmenter (its
        [`predict_scores`][spectralnet_seg.segmentation.Segmenter.predict_scores] is used).
    image : ndarray of shape (H, W, 3)
        The image.
    window : int
        Side of the square windows (clipped to the image size).
    stride : int
        Step between windows.

    Returns
    -------
    ndarray of shape (H, W, n_labels)
        Mean score of each label over the windows covering each pixel.
    """
    if not (is_integer(window) and window >= 1 and is_integer(stride) and stride >= 1):
        raise ValueError(f"window and stride must be positive ints, got window={window!r}, "
                         f"stride={stride!r}")
    if stride > window:
        raise ValueError(f"stride={stride} is larger than window={window}: pixels between "
                         "windows would get no score.")
    H, W = image.shape[:2]
    wh, ww = min(window, H), min(window, W)
    boxes = [(top, left) for top in _window_starts(H, wh, stride)
             for left in _window_starts(W, ww, stride)]
    crops = [image[t:t + wh, s:s + ww] for t, s in boxes]
    total = None
    count = np.zeros((H, W, 1), dtype=np.float32)
    for (top, left), scores in zip(boxes, segmenter.predict_scores(crops), strict=True):
        if total is None:
            total = np.zeros((H, W, scores.shape[2]), dtype=np.float32)
        total[top:top + wh, left:left + ww] += scores
        count[top:top + wh, left:left + ww] += 1.0
    return total / count


@validate_params(
    {
        "segmenter": "no_validation",
        "dataset": "no_validation",
        "matching": [StrOptions({"majority", "hungarian"})],
        "protocol": [StrOptions({"reco", "sliding"}), None, callable],
        "crop_size": [Interval(Integral, 1, None, closed="left")],
        "stride": [Interval(Integral, 1, None, closed="left"), None],
        "fit": ["boolean"],
        "max_images": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "return_predictions": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def evaluate(segmenter, dataset, *, matching: str = "majority",
             protocol: str | Callable | None = "reco", crop_size: int = 320,
             stride: int | None = None, fit: bool = False, max_images: int | None = None,
             batch_size: int = 8, return_predictions: bool = False,
             verbose: bool = False) -> dict:
    """Predict every image of ``dataset`` and score the label maps against its masks.

    Parameters
    ----------
    segmenter : Segmenter
        A fitted segmenter (or any object with ``predict(images) -> list of label maps``;
        sliding-window inference also needs ``predict_scores``).
    dataset : SegmentationDataset or sequence of (image, mask)
        Items ``(image (H, W, 3), mask (H, W))``, masks with class ids and 255 = ignore;
        ``n_classes`` and ``class_names`` are used when present.
    matching : {"majority", "hungarian"}, default="majority"
        Cluster→class mapping fitted on the evaluation set: many-to-one vote by IoU (the
        paper's choice when clusters outnumber classes) or one-to-one Hungarian assignment.
    protocol : {"reco", "sliding"}, callable or None, default="reco"
        ``"reco"``: resize the short side to ``crop_size`` and centre-crop
        ``crop_size × crop_size`` (Pascal Context, Cityscapes in the paper); ``"sliding"``:
        resize the short side to ``crop_size`` and predict overlapping
        ``crop_size × crop_size`` windows, averaging their scores; a callable
        ``(image, mask) -> (image, mask)`` is applied before predicting the whole image;
        None predicts the images as they are.
    crop_size : int, default=320
        Side of the protocol's crop / window.
    stride : int, optional
        Window step of ``"sliding"`` (at most ``crop_size``, so that windows cover every
        pixel); ``crop_size // 2`` by default.
    fit : bool, default=False
        Fit the segmenter on the (transformed) evaluation images first (transductive use)
        and score the fit's own labels of them (``fit_predict``; with ``"sliding"``, a fit
        and then window predictions); by default it must already be fitted, e.g. on a
        training split.
    max_images : int, optional
        Evaluate only the first ``max_images`` items.
    batch_size : int, default=8
        Images predicted per call (bounds memory).
    return_predictions : bool, default=False
        Also return the label maps (cluster ids) under ``"predictions"``.
    verbose : bool, default=False
        Progress bar over batches.

    Returns
    -------
    dict
        ``pixel_accuracy`` and ``mean_iou`` (floats in [0, 1]), ``per_class_iou``
        (ndarray of shape (n_classes,), NaN for classes absent from truth and prediction),
        ``class_names``, ``mapping`` (cluster → class, -1 unmatched), ``confusion``
        (classes × clusters), ``matching``, ``protocol``, ``n_images``, ``n_clusters``,
        ``predict_time`` (seconds; with ``fit=True``, of ``fit_predict``) and, if asked,
        ``predictions``.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from spectralnet_seg.segmentation import Segmenter
    >>> from spectralnet_seg.datasets import TextureMosaics
    >>> from spectralnet_seg.features import PixelExtractor
    >>> data = TextureMosaics(n_images=3, image_size=48, seed=0)
    >>> seg = Segmenter(PixelExtractor(), KMeans(6, n_init=2, random_state=0))
    >>> scores = evaluate(seg, data, protocol=None, fit=True)
    >>> 0.0 <= scores["mean_iou"] <= 1.0
    True
    """
    n_items = len(dataset)
    if n_items == 0:
        raise ValueError("the dataset is empty; nothing to evaluate.")
    n_items = min(n_items, max_images) if max_images is not None else n_items
    stride = stride if stride is not None else max(1, crop_size // 2)
    if protocol == "sliding" and stride > crop_size:
        # Pixels between windows would get no score (0 / 0) and the argmax label 0.
        raise ValueError(f"stride={stride} is larger than crop_size={crop_size}: the sliding "
                         "windows would leave pixels uncovered; use stride <= crop_size.")

    def prepare(index: int):
        return _prepare_item(dataset, index, protocol, crop_size)

    # Transductive: the fit's own labels of the evaluation images (fit_predict), not a
    # second prediction of them (for eigsh an approximate Nyström extension).
    fitted_labels, predict_time = None, 0.0
    if fit:
        images = [prepare(i)[0] for i in range(n_items)]
        if protocol != "sliding" and hasattr(segmenter, "fit_predict"):
            tic = time.perf_counter()
            fitted_labels = segmenter.fit_predict(images)
            predict_time = time.perf_counter() - tic
        else:
            segmenter.fit(images)
        del images
    else:
        _check_segmenter_fitted(segmenter)

    n_classes = getattr(dataset, "n_classes", None)
    n_clusters = getattr(segmenter, "n_labels_", None)
    ignore_index = getattr(dataset, "ignore_index", 255)
    confusion = None
    predictions: list[np.ndarray] = []
    starts = range(0, n_items, batch_size)
    for start in progress(starts, verbose=verbose, desc="evaluating", total=len(starts)):
        pairs = [prepare(i) for i in range(start, min(start + batch_size, n_items))]
        if fitted_labels is not None:
            labels = fitted_labels[start:start + len(pairs)]
        else:
            tic = time.perf_counter()
            labels = _predict_batch(segmenter, [image for image, _ in pairs], protocol,
                                    crop_size, stride)
            predict_time += time.perf_counter() - tic
        for (_, mask), pred in zip(pairs, labels, strict=True):
            part = _image_confusion(mask, pred, n_classes, n_clusters, ignore_index)
            confusion = part if confusion is None else _add_confusions(confusion, part)
            if return_predictions:
                predictions.append(pred)

    if confusion.sum() == 0:
        warnings.warn(
            f"every ground-truth pixel of the {n_items} evaluated masks is ignore_index="
            f"{ignore_index}: there is nothing to score, pixel_accuracy and mean_iou are NaN. "
            "Check the masks' class ids and the dataset's ignore_index.",
            UndefinedMetricWarning, stacklevel=user_stacklevel())
    with warnings.catch_warnings():  # warned above, with the evaluation's context
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = scores_from_confusion(confusion, matching)
    n_classes = confusion.shape[0]
    class_names = list(getattr(dataset, "class_names", [f"class {c}" for c in range(n_classes)]))
    result = {
        **scores,
        "class_names": class_names,
        "confusion": confusion,
        "matching": matching,
        "protocol": protocol if isinstance(protocol, str) or protocol is None else "custom",
        "n_images": n_items,
        "n_clusters": int(confusion.shape[1]),
        "predict_time": predict_time,
    }
    if return_predictions:
        result["predictions"] = predictions
    return result


def _prepare_item(dataset, index: int, protocol, crop_size: int):
    """Item ``index`` of ``dataset`` as arrays, checked and transformed by ``protocol``."""
    item = dataset[index]
    # An image alone (array, path) or a number would otherwise be unpacked as a pair, or fail
    # with Python's "cannot unpack non-iterable float object".
    if isinstance(item, np.ndarray):
        kind = f"an array of shape {item.shape}"
    elif isinstance(item, (str, bytes)) or not hasattr(item, "__len__"):
        kind = type(item).__name__
    else:
        kind = None if len(item) == 2 else f"a sequence of {len(item)}"
    if kind is not None:
        raise TypeError(f"dataset item {index} must be an (image, mask) pair, got {kind}; "
                        "pass a SegmentationDataset or a sequence of (image, mask) pairs "
                        "(to segment images without masks, use segmenter.predict).")
    image, mask = item
    # A path or PIL image is read as the segmenter would read it.
    image = image if isinstance(image, np.ndarray) else load_image(image, name=f"item {index}")
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"item {index}: mask shape {mask.shape} does not match image "
                         f"shape {image.shape[:2]}")
    if protocol == "reco":
        return reco_protocol(image, mask, size=crop_size)
    if protocol == "sliding":
        return resize_short_side(image, mask, crop_size)
    if callable(protocol):
        image, mask = (np.asarray(a) for a in protocol(image, mask))
        if mask.shape != image.shape[:2]:
            raise ValueError(f"item {index}: the protocol returned a {mask.shape} mask for a "
                             f"{image.shape[:2]} image; it must transform both alike")
    return image, mask


def _check_segmenter_fitted(segmenter) -> None:
    """A clear error for an unfitted scikit-learn-style segmenter (others are trusted)."""
    if not hasattr(segmenter, "get_params"):
        return
    try:
        check_is_fitted(segmenter)
    except NotFittedError:
        raise NotFittedError(
            "the segmenter is not fitted: call segmenter.fit(train_images) first, or pass "
            "fit=True to fit it on the evaluation images.") from None


def _predict_batch(segmenter, images: list[np.ndarray], protocol, crop_size: int,
                   stride: int) -> list[np.ndarray]:
    """Label maps of ``images``: whole-image ``predict`` or averaged sliding windows."""
    if protocol == "sliding":
        # The CRF (if any) refines the averaged scores once, not every window.
        refine = getattr(segmenter, "_refine", lambda _, scores: scores.argmax(axis=2))
        return [refine(image, sliding_window_scores(segmenter, image, window=crop_size,
                                                    stride=stride)) for image in images]
    return segmenter.predict(images)


def _image_confusion(mask: np.ndarray, pred: np.ndarray, n_classes: int | None,
                     n_clusters: int | None, ignore_index: int) -> np.ndarray:
    """Classes × clusters confusion of one image (sizes from the data when not given)."""
    if pred.shape != mask.shape:
        raise ValueError(f"the segmenter returned a {pred.shape} label map for a "
                         f"{mask.shape} mask; label maps must be at full resolution")
    # int64 first: max(initial=-1) of an all-ignored uint8 mask would overflow.
    classes = n_classes if n_classes is not None else int(
        mask[mask != ignore_index].astype(np.int64).max(initial=-1)) + 1
    k = n_clusters if n_clusters is not None else int(pred.max()) + 1
    return confusion_matrix(mask, pred, classes, k, ignore_index)


def _add_confusions(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total + part``, grown to the larger shape: without ``n_classes`` / ``n_labels_``,
    later images may show more classes or clusters than the earlier ones."""
    grown = np.zeros(np.maximum(total.shape, part.shape), np.int64)
    grown[:total.shape[0], :total.shape[1]] += total
    grown[:part.shape[0], :part.shape[1]] += part
    return grown
