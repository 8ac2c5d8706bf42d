"""Cluster→class matching and segmentation scores on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from spectralnet_seg import metrics
from spectralnet_seg.metrics import (
    apply_mapping,
    confusion_matrix,
    hungarian_match,
    majority_match,
    match_clusters,
    mean_iou,
    normalized_cut,
    pixel_accuracy,
    segmentation_scores,
)


def test_confusion_matrix_counts_and_ignore_index():
    y_true = np.array([[0, 0, 1], [1, 255, 2]])
    y_pred = np.array([[1, 1, 0], [2, 2, 2]])
    conf = confusion_matrix(y_true, y_pred, n_classes=3, n_clusters=3)
    expected = np.array([[0, 2, 0],
                         [1, 0, 1],
                         [0, 0, 1]])
    assert_array_equal(conf, expected)
    assert conf.sum() == 5  # the ignored pixel is not counted
    # ignore_index=None keeps every pixel, so 255 is then an out-of-range class.
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(y_true, y_pred, n_classes=3, n_clusters=3, ignore_index=None)


def test_confusion_matrix_shapes_and_lists_of_maps():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (2, 5, 6)), rng.integers(0, 4, (7, 3))
    pa, pb = rng.integers(0, 3, a.shape), rng.integers(0, 3, b.shape)
    conf = confusion_matrix([a, b], [pa, pb], n_classes=4, n_clusters=3)
    flat = confusion_matrix(np.concatenate([a.ravel(), b.ravel()]),
                            np.concatenate([pa.ravel(), pb.ravel()]), 4, 3)
    assert_array_equal(conf, flat)
    assert conf.shape == (4, 3) and conf.sum() == a.size + b.size


@pytest.mark.parametrize("y_true, y_pred, match", [
    (np.zeros((2, 3), int), np.zeros((3, 2), int), "same shape"),
    ([0, 1], [0.5, 1.0], "integer labels"),
    ([0, -1], [0, 1], "outside"),
    ([0, 1], [0, -2], "outside"),
])
def test_confusion_matrix_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(y_true, y_pred)


def test_permuted_labels_score_perfectly_with_both_matchings():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=(4, 16, 16))
    perm = rng.permutation(5)
    y_pred = perm[y_true]
    for matching in ("hungarian", "majority"):
        s = segmentation_scores(y_true, y_pred, n_classes=5, matching=matching)
        assert s["pixel_accuracy"] == 1.0
        assert s["mean_iou"] == 1.0
        assert_array_equal(s["mapping"][perm], np.arange(5))  # cluster perm[c] -> class c
    assert metrics.normalized_mutual_info_score(y_true.ravel(), y_pred.ravel()) == 1.0
    assert metrics.adjusted_rand_score(y_true.ravel(), y_pred.ravel()) == 1.0


def test_ignore_index_pixels_do_not_count():
    y_true = np.array([0, 0, 1, 1, 255, 255])
    y_pred = np.array([1, 1, 0, 0, 0, 1])  # the ignored pixels are "wrong" either way
    s = segmentation_scores(y_true, y_pred, n_classes=2)
    assert s["pixel_accuracy"] == 1.0 and s["mean_iou"] == 1.0
    assert s["confusion"].sum() == 4
    # Without the ignore index, 255 would be a class id out of range.
    with pytest.raises(ValueError, match="outside"):
        segmentation_scores(y_true, y_pred, n_classes=2, ignore_index=None)


def test_hungarian_more_clusters_than_classes_leaves_extra_unmatched():
    # 2 classes, 3 clusters: cluster 2 is a small part of class 0 and gets no class.
    y_true = np.array([0] * 6 + [1] * 4)
    y_pred = np.array([1, 1, 1, 1, 2, 2, 0, 0, 0, 0])
    conf = confusion_matrix(y_true, y_pred, 2, 3)
    mapping = hungarian_match(conf)
    assert_array_equal(mapping, [1, 0, -1])
    s = segmentation_scores(y_true, y_pred, n_classes=2, matching="hungarian")
    assert s["pixel_accuracy"] == pytest.approx(0.8)  # the 2 pixels of cluster 2 are errors
    # class 0: tp 4, gt 6, pred 4 -> 4/6; class 1: tp 4, gt 4, pred 4 -> 1.
    assert_allclose(s["per_class_iou"], [4 / 6, 1.0])
    assert s["mean_iou"] == pytest.approx((4 / 6 + 1) / 2)
    # Majority voting may send two clusters to the same class: then everything is right.
    s = segmentation_scores(y_true, y_pred, n_classes=2, matching="majority")
    assert_array_equal(s["mapping"], [1, 0, 0])
    assert s["pixel_accuracy"] == 1.0 and s["mean_iou"] == 1.0


def test_hungarian_fewer_clusters_than_classes():
    # 3 classes, 2 clusters: class 2 receives no cluster and scores IoU 0.
    y_true = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    s = segmentation_scores(y_true, y_pred, n_classes=3, matching="hungarian")
    assert_array_equal(s["mapping"], [0, 1])
    assert_allclose(s["per_class_iou"], [1.0, 3 / 5, 0.0])
    assert s["pixel_accuracy"] == pytest.approx(6 / 8)


def test_majority_is_by_iou_not_raw_counts():
    # Cluster 1 has more pixels of big class 0 (6) than of class 1 (4), but its IoU with
    # class 1 (4 / 4 + ... ) is higher, so IoU voting gives it to class 1.
    y_true = np.array([0] * 40 + [1] * 4)
    y_pred = np.array([0] * 34 + [1] * 6 + [1] * 4)
    conf = confusion_matrix(y_true, y_pred, 2, 2)
    assert conf[0, 1] > conf[1, 1]
    # IoU(cluster 1, class 0) = 6 / (40 + 10 - 6) = 0.136; with class 1 = 4 / (4 + 10 - 4) = 0.4
    assert_array_equal(majority_match(conf), [0, 1])
    # An empty cluster maps to -1.
    assert_array_equal(majority_match(np.array([[3, 0], [0, 0]])), [0, -1])


def test_many_to_one_majority_scores():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # 5 clusters over 3 classes
    mapping = match_clusters(y_true, y_pred, method="majority")
    assert_array_equal(mapping, [0, 0, 1, 1, 2])
    assert_array_equal(apply_mapping(y_pred, mapping), y_true)
    s = segmentation_scores(y_true, y_pred, n_classes=3, matching="majority")
    assert s["pixel_accuracy"] == 1.0 and s["mean_iou"] == 1.0


def test_absent_classes_are_nan_and_excluded_from_mean():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 0])
    miou, per_class = mean_iou(y_true, y_pred, n_classes=4, return_per_class=True)
    # class 0: tp 2, union 3; class 1: tp 1, union 2; classes 2, 3 absent everywhere.
    assert_allclose(per_class[:2], [2 / 3, 1 / 2])
    assert np.isnan(per_class[2:]).all()
    assert miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    # A class predicted but absent from the truth counts as IoU 0 (it is not excluded).
    miou = mean_iou(y_true, np.array([0, 0, 1, 3]), n_classes=4)
    assert miou == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_class_id_scores_and_no_class_predictions():
    y_true = np.array([0, 1, 1, 255])
    assert pixel_accuracy(y_true, np.array([0, 1, 0, 1])) == pytest.approx(2 / 3)
    # 255 (an unmatched cluster after apply_mapping) is "no class": an error, not a class.
    y_pred = np.array([0, 255, 1, 1])
    assert pixel_accuracy(y_true, y_pred) == pytest.approx(2 / 3)
    assert_allclose(mean_iou(y_true, y_pred, n_classes=2, return_per_class=True)[1],
                    [1.0, 0.5])


def test_identity_and_given_mapping():
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 1, 2, 1])
    s = segmentation_scores(y_true, y_pred, n_classes=3, matching=None)
    assert s["pixel_accuracy"] == pytest.approx(0.75)
    assert s["mean_iou"] == pytest.approx(mean_iou(y_true, y_pred, n_classes=3))
    s = segmentation_scores(y_true, y_pred, n_classes=3, matching=np.array([0, 2, 1]))
    assert s["pixel_accuracy"] == pytest.approx(0.5)  # mapped: [0, 2, 1, 2]
    with pytest.raises(ValueError, match=r"matching array .* got shape \(2,\)"):
        segmentation_scores(y_true, y_pred, n_classes=3, matching=np.array([0, 1]))
    for bad in ([0.9, 1.9, -1], [0, 1, -5], [0, 1, 3]):  # truncated / "unmatched" / too big
        with pytest.raises(ValueError, match=r"integer class ids \(or -1\) in \[-1, 3\)"):
            segmentation_scores(y_true, y_pred, n_classes=3, matching=np.array(bad))
    with pytest.raises(ValueError, match="matching must be one of"):
        segmentation_scores(y_true, y_pred, n_classes=3, matching="greedy")


def test_public_metric_functions_check_mappings_and_counts():
    """apply_mapping truncated a float mapping ([1.7, 0.2] mapped [0, 1, 1] to [1, 0, 0])
    and read -2 as "unmatched"; scores_with_mapping, confusion_matrix and mean_iou failed
    inside numpy (IndexError in np.add.at, TypeError in np.bincount) on a class id out of
    range, a list mapping, n_classes=3.0 or None; a list of maps of two sizes beside one
    array failed in np.asarray ("inhomogeneous shape")."""
    from spectralnet_seg.metrics import apply_mapping, scores_with_mapping

    for bad in (np.array([1.7, 0.2]), np.array([-2, 0]), np.array([[1, 0]])):
        with pytest.raises(ValueError, match=r"matching array must be 1-D and hold integer"):
            apply_mapping([0, 1, 1], bad)
    assert_array_equal(apply_mapping([0, 1, 1], [1, -1]), [1, 255, 255])  # a list is fine
    assert apply_mapping(np.array([], int), []).size == 0  # [] is float64 to numpy
    confusion = np.array([[3, 0], [1, 2]])
    expected = scores_with_mapping(confusion, np.array([0, 1]))
    assert expected["pixel_accuracy"] == pytest.approx(5 / 6)  # by hand: 3 + 2 of 6
    assert scores_with_mapping(confusion, [0, 1])["pixel_accuracy"] == pytest.approx(5 / 6)
    for bad in ([0, 2], [0.0, 1.0], [0]):  # class 2 of 2, floats, one entry for 2 clusters
        with pytest.raises(ValueError, match=r"in \[-1, 2\) for each of the 2 clusters"):
            scores_with_mapping(confusion, bad)
    with pytest.raises(ValueError, match="confusion must be a 2-D"):
        scores_with_mapping(np.array([3, 1]), [0, 1])
    for kwargs in ({"n_classes": 3.0}, {"n_clusters": np.float64(3)}, {"n_classes": -1}):
        with pytest.raises(ValueError, match="must be a non-negative integer or None"):
            confusion_matrix([0, 1], [0, 1], **kwargs)
    for n_classes in (None, 3.0):
        with pytest.raises(ValueError, match="n_classes must be a non-negative integer, got"):
            mean_iou([0, 1], [0, 1], n_classes)
        with pytest.raises(ValueError, match="n_classes must be a non-negative integer, got"):
            segmentation_scores([0, 1], [0, 1], n_classes)
    with pytest.raises(ValueError, match="a list of maps of different sizes needs a list"):
        segmentation_scores([np.zeros((2, 2), int), np.zeros((3, 3), int)], np.zeros(13, int), 1)


def test_scores_agree_with_sklearn_on_random_labels():
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert_array_equal(confusion_matrix(y_true, y_pred, 4, 4),
                       sk_confusion(y_true, y_pred, labels=range(4)))
    _, per_class = mean_iou(y_true, y_pred, 4, return_per_class=True)
    assert_allclose(per_class, jaccard_score(y_true, y_pred, average=None))


# ----------------------------------------------------------------------------- normalised cut


def test_normalized_cut_by_hand():
    # Two triangles (weights 1) joined by one edge of weight 0.5, plus a self-loop of 2 on
    # node 0 (it counts in the volume, never in the cut).
    W = np.zeros((6, 6))
    for a, b in [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]:
        W[a, b] = W[b, a] = 1.0
    W[2, 3] = W[3, 2] = 0.5
    W[0, 0] = 2.0
    # vol({0,1,2}) = (2+2) + 2 + 2.5 = 8.5, vol({3,4,5}) = 2.5 + 2 + 2 = 6.5; cut = 0.5
    assert normalized_cut(W, [0, 0, 0, 1, 1, 1]) == pytest.approx(0.5 / 8.5 + 0.5 / 6.5)
    # Any ids; one cluster cuts nothing; singletons cut everything except self-loops.
    assert normalized_cut(W, [7, 7, 7, -1, -1, -1]) == pytest.approx(0.5 / 8.5 + 0.5 / 6.5)
    assert normalized_cut(W, np.zeros(6)) == 0.0
    assert normalized_cut(W, np.arange(6)) == pytest.approx(5 + 2 / 4)
    # A cluster of isolated nodes (zero volume) adds nothing.
    W_iso = np.pad(W, ((0, 1), (0, 1)))
    assert normalized_cut(W_iso, [0, 0, 0, 1, 1, 1, 2]) == pytest.approx(0.5 / 8.5 + 0.5 / 6.5)


def test_normalized_cut_matches_the_laplacian_quadratic_form():
    # Independent formula: Ncut = sum_k h_k^T (D - W) h_k / h_k^T D h_k, h_k the indicator
    # of cluster k (Shi & Malik; von Luxburg 2007, section 5).
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    A = sp.random(60, 60, density=0.2, random_state=0) * 3.0
    W = (A + A.T).toarray()
    labels = rng.integers(0, 4, 60)
    D = np.diag(W.sum(axis=1))
    H = np.eye(4)[labels]  # (n, K) indicators
    expected = np.sum(np.diag(H.T @ (D - W) @ H) / np.diag(H.T @ D @ H))
    assert normalized_cut(W, labels) == pytest.approx(expected, rel=1e-12)
    assert normalized_cut(sp.csr_matrix(W), labels) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("W", "labels", "match"), [
    (np.ones((3, 4)), [0, 0, 1], "square"),
    (np.triu(np.ones((3, 3))), [0, 0, 1], "symmetric"),
    (np.triu(np.ones((3, 3))) * 1e-9, [0, 0, 1], "symmetric"),  # relative tolerance
    (-np.ones((3, 3)), [0, 0, 1], "negative"),
    (np.full((3, 3), np.nan), [0, 0, 1], "NaN"),
    (np.ones((3, 3)), [0, 1], r"shape \(3,\)"),
])
def test_normalized_cut_bad_input(W, labels, match):
    with pytest.raises(ValueError, match=match):
        normalized_cut(W, labels)


def test_docstring_examples_run():
    """The examples of every module of the metrics package (they live in its submodules)."""
    import doctest
    import importlib
    import pkgutil

    results = [doctest.testmod(importlib.import_module(info.name))
               for info in pkgutil.iter_modules(metrics.__path__, f"{metrics.__name__}.")]
    assert sum(r.attempted for r in results) > 0 and sum(r.failed for r in results) == 0


def test_hungarian_ignores_classes_that_do_not_occur():
    """A class without pixels took a cluster at zero gain, chosen by the order of the cluster
    ids: renaming the clusters changed the mIoU (0.606 against 0.909 here)."""
    from spectralnet_seg.evaluation import scores_from_confusion
    from spectralnet_seg.metrics import hungarian_match

    confusion = np.array([[10, 0, 1, 0], [0, 10, 1, 0], [0, 0, 0, 0]])  # class 2 absent
    scores = [scores_from_confusion(confusion[:, order], "hungarian")["mean_iou"]
              for order in ([0, 1, 2, 3], [0, 1, 3, 2], [2, 3, 1, 0])]
    # Independent value: classes 0 and 1 matched to their clusters, 1 pixel each left over.
    np.testing.assert_allclose(scores, 10 / 11)
    assert list(hungarian_match(confusion)) == [0, 1, -1, -1]


def test_matching_inputs_are_checked():
    from spectralnet_seg.metrics import apply_mapping, hungarian_match, majority_match

    with pytest.raises(ValueError, match=r"integer cluster ids in \[0, 3\)"):
        apply_mapping([-2], [1, 0, -1])  # was mapping[-2], silently
    with pytest.raises(ValueError, match="integer cluster ids"):
        apply_mapping([3], [1, 0, -1])
    with pytest.raises(ValueError, match="integer cluster ids"):
        apply_mapping([0.5], [1, 0, -1])
    for match in (hungarian_match, majority_match):
        with pytest.raises(ValueError, match="2-D .* non-negative counts"):
            match(np.ones(3))  # were IndexError / AxisError
        with pytest.raises(ValueError, match="non-negative counts"):
            match(np.array([[1, -1], [0, 2]]))


def test_a_cluster_seen_only_under_ignored_pixels_keeps_its_column():
    # The mapping fitted on a prediction must apply back to that prediction.
    t = np.array([[0, 0, 1], [1, 255, 255]])
    p = np.array([[0, 0, 1], [1, 2, 2]])
    assert confusion_matrix(t, p).shape == (2, 3)
    mapping = match_clusters(t, p)
    assert_array_equal(apply_mapping(p, mapping)[0], [0, 0, 1])


@pytest.mark.parametrize("ignore_index", ["255", 255.5, True])
def test_an_ignore_index_that_is_not_an_integer_is_refused(ignore_index):
    # "255" compared unequal to every pixel: nothing was ignored.
    with pytest.raises(ValueError, match="ignore_index must be an integer"):
        pixel_accuracy([0, 255], [0, 1], ignore_index=ignore_index)
    with pytest.raises(ValueError, match="ignore_index must be an integer"):
        confusion_matrix([0, 255], [0, 1], ignore_index=ignore_index)


def test_float_counts_are_scored_as_they_are():
    from spectralnet_seg.evaluation import scores_from_confusion
    from spectralnet_seg.metrics import scores_with_mapping
    confusion = np.array([[0.6, 0.4], [0.1, 0.9]])  # a row-normalised confusion
    # By hand: accuracy (0.6 + 0.9) / 2; IoU .6 / (1 + .7 - .6) and .9 / (1 + 1.3 - .9).
    expected_iou = np.mean([0.6 / 1.1, 0.9 / 1.4])
    for scores in (scores_from_confusion(confusion, "hungarian"),
                   scores_with_mapping(confusion, np.array([0, 1]))):
        assert_allclose(scores["pixel_accuracy"], 0.75)
        assert_allclose(scores["mean_iou"], expected_iou)
    with pytest.raises(ValueError, match="non-negative"):
        scores_from_confusion(-confusion)
