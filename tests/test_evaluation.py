"""evaluate(): cluster->class matching, scores, protocols and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import hungarian_scores
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError

from spectralnet_seg.datasets import reco_protocol
from spectralnet_seg.evaluation import evaluate, scores_from_confusion, sliding_window_scores
from spectralnet_seg.segmentation import Segmenter

PALETTE = np.array([[200, 20, 20], [20, 200, 20], [20, 20, 200], [200, 200, 20]], np.uint8)


class ColourDataset:
    """Images whose pixel colour encodes the class; masks with a band of ignored pixels."""

    class_names = ["red", "green", "blue", "yellow"]
    n_classes = 4
    ignore_index = 255

    def __init__(self, n_images=3, shape=(24, 40), seed=0):
        rng = np.random.default_rng(seed)
        self.masks = []
        for _ in range(n_images):
            blocks = rng.integers(0, 4, size=(3, 5))
            self.masks.append(np.kron(blocks, np.ones((8, 8), int))[: shape[0], : shape[1]])

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        mask = self.masks[i].copy()
        image = PALETTE[mask]
        mask[:, -2:] = 255  # unlabelled border: never scored
        return image, mask


class ColourSegmenter:
    """Reads the class off the colour and outputs ``cluster_of_class[class]``."""

    def __init__(self, cluster_of_class, n_labels=None):
        self.cluster_of_class = np.asarray(cluster_of_class)
        self.n_labels_ = n_labels or int(self.cluster_of_class.max()) + 1
        self.seen_shapes = []

    def _classes(self, image):
        distance = ((image[:, :, None, :].astype(int) - PALETTE[None, None]) ** 2).sum(-1)
        return distance.argmin(axis=2)

    def fit(self, images):
        self.fitted_on = len(images)
        return self

    def predict(self, images):
        self.seen_shapes += [im.shape[:2] for im in images]
        return [self.cluster_of_class[self._classes(im)] for im in images]

    def predict_scores(self, images):
        self.seen_shapes += [im.shape[:2] for im in images]
        eye = np.eye(self.n_labels_, dtype=np.float32)
        return [eye[self.cluster_of_class[self._classes(im)]] for im in images]


def test_scores_from_a_hand_computed_confusion():
    # 2 classes x 3 clusters: cluster 0 -> class 0, clusters 1 and 2 -> class 1.
    confusion = np.array([[8, 2, 0],
                          [1, 5, 4]])
    major = scores_from_confusion(confusion, "majority")
    np.testing.assert_array_equal(major["mapping"], [0, 1, 1])
    assert major["pixel_accuracy"] == pytest.approx(17 / 20)
    np.testing.assert_allclose(major["per_class_iou"], [8 / 11, 9 / 12])
    hung = scores_from_confusion(confusion, "hungarian")
    np.testing.assert_array_equal(hung["mapping"], [0, 1, -1])
    # Cluster 2 is unmatched: its 4 pixels of class 1 are errors.
    assert hung["pixel_accuracy"] == pytest.approx(13 / 20)
    np.testing.assert_allclose(hung["per_class_iou"], [8 / 11, 5 / 12])
    with pytest.raises(ValueError, match="matching"):
        scores_from_confusion(confusion, "vote")


def test_permuted_perfect_clustering_scores_one_under_both_matchings():
    data = ColourDataset()
    for matching in ("hungarian", "majority"):
        scores = evaluate(ColourSegmenter([2, 0, 3, 1]), data, matching=matching,
                          protocol=None)
        assert scores["mean_iou"] == pytest.approx(1.0)
        assert scores["pixel_accuracy"] == pytest.approx(1.0)
        np.testing.assert_array_equal(scores["mapping"], [1, 3, 0, 2])
    # Ignored pixels are not counted: 3 images of 24 x 38 scored pixels.
    assert scores["confusion"].sum() == 3 * 24 * 38
    assert scores["class_names"] == ColourDataset.class_names
    assert scores["n_images"] == 3 and scores["n_clusters"] == 4


def test_over_segmentation_is_forgiven_by_majority_but_not_by_hungarian():
    # Each class split over two clusters (colour -> cluster, classes 0/1 share none).
    seg = ColourSegmenter([0, 1, 2, 3], n_labels=8)
    data = ColourDataset()

    def split_predict(images):
        maps = ColourSegmenter.predict(seg, images)
        return [m + 4 * (np.arange(m.shape[1])[None, :] % 2) for m in maps]

    seg.predict = split_predict
    major = evaluate(seg, data, matching="majority", protocol=None)
    hung = evaluate(seg, data, matching="hungarian", protocol=None)
    assert major["mean_iou"] == pytest.approx(1.0)
    assert 0.3 < hung["pixel_accuracy"] < 0.7


def test_reco_protocol_crops_and_sliding_windows_cover_the_image():
    data = ColourDataset(n_images=2)
    seg = ColourSegmenter([0, 1, 2, 3])
    scores = evaluate(seg, data, protocol="reco", crop_size=16)
    assert set(seg.seen_shapes) == {(16, 16)}
    assert scores["pixel_accuracy"] > 0.95  # bilinear resizing blends colours at borders
    seg = ColourSegmenter([0, 1, 2, 3])
    scores = evaluate(seg, data, protocol="sliding", crop_size=16, stride=8,
                      return_predictions=True)
    # The short side (24) is resized to 16: the 16 x 27 image needs 3 windows of 16 x 16.
    assert seg.seen_shapes == [(16, 16)] * 6
    assert [p.shape for p in scores["predictions"]] == [(16, 27), (16, 27)]
    assert scores["pixel_accuracy"] > 0.95  # only resampled borders can differ


def test_sliding_window_scores_average_overlapping_windows():
    image = PALETTE[np.kron(np.array([[0, 1], [2, 3]]), np.ones((10, 15), int))]
    seg = ColourSegmenter([0, 1, 2, 3])
    scores = sliding_window_scores(seg, image, window=12, stride=5)
    assert scores.shape == (20, 30, 4)
    np.testing.assert_allclose(scores.sum(axis=2), 1.0)
    np.testing.assert_array_equal(scores.argmax(axis=2), seg._classes(image))
    # Windows 12 apart leave gaps: their pixels scored 0 / 0 and took label 0, silently.
    with pytest.raises(ValueError, match="stride=13 is larger than window=12"):
        sliding_window_scores(seg, image, window=12, stride=13)
    with pytest.raises(ValueError, match="stride=20 is larger than crop_size=16"):
        evaluate(seg, ColourDataset(n_images=1), protocol="sliding", crop_size=16, stride=20)


def test_fit_true_fits_on_the_evaluation_images_and_limits_apply():
    seg = ColourSegmenter([0, 1, 2, 3])
    scores = evaluate(seg, ColourDataset(n_images=4), protocol=None, fit=True, max_images=2)
    assert seg.fitted_on == 2 and scores["n_images"] == 2


def test_bad_inputs_give_clear_errors():
    seg = ColourSegmenter([0, 1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        evaluate(seg, [], protocol=None)
    image, mask = ColourDataset()[0]
    with pytest.raises(ValueError, match="does not match image"):
        evaluate(seg, [(image, mask[:-1])], protocol=None)
    with pytest.raises(ValueError, match="matching"):
        evaluate(seg, ColourDataset(), matching="vote")
    # Items that are no (image, mask) pair: numbers, paths or images alone, wrong lengths.
    for bad, kind in (([1.0, 2.0], "got float"), (["a.png"], "got str"),
                      ([image], rf"got an array of shape \({image.shape[0]}, "),
                      ([(image,)], "got a sequence of 1")):
        with pytest.raises(TypeError, match=rf"item 0 must be an \(image, mask\) pair, {kind}"):
            evaluate(seg, bad, protocol=None)

    class LowRes(ColourSegmenter):
        def predict(self, images):
            return [m[::2, ::2] for m in super().predict(images)]

    with pytest.raises(ValueError, match="full resolution"):
        evaluate(LowRes([0, 1, 2, 3]), ColourDataset(), protocol=None)


def test_real_segmenter_end_to_end_on_mosaics_and_unfitted_error():
    from spectralnet_seg.datasets import TextureMosaics
    from spectralnet_seg.features import PixelExtractor

    data = TextureMosaics(n_images=3, image_size=48, seed=0)
    seg = Segmenter(PixelExtractor(stride=8), KMeans(6, n_init=2, random_state=0))
    with pytest.raises(NotFittedError, match="fit=True"):
        evaluate(seg, data, protocol=None)
    scores = evaluate(seg, data, protocol="reco", crop_size=32, fit=True, matching="hungarian",
                      return_predictions=True)
    cropped = [reco_protocol(image, mask, size=32)[1] for image, mask in data]
    assert [m.shape for m in scores["predictions"]] == [(32, 32)] * 3
    reference = hungarian_scores(cropped, scores["predictions"], data.n_classes)
    assert scores["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(reference["pixel_accuracy"], abs=1e-12)
    assert scores["per_class_iou"].shape == (6,) and scores["n_clusters"] == 6
    assert scores["predict_time"] > 0


def test_fit_true_scores_the_fits_own_labels_and_sliding_windows_refine_once(monkeypatch):
    """evaluate(fit=True) re-predicted the fitted images (for eigsh through the Nystrom
    extension), and with protocol="sliding" the CRF ran on every window and was discarded."""
    from spectralnet_seg.cluster import EigshSpectralClustering
    from spectralnet_seg.datasets import TextureMosaics
    from spectralnet_seg.features import PixelExtractor
    from spectralnet_seg.segmentation import segmenter as segmenter_module

    data = TextureMosaics(n_images=3, image_size=48, seed=0)
    seg = Segmenter(PixelExtractor(stride=8), EigshSpectralClustering(4, random_state=0))
    scores = evaluate(seg, data, protocol=None, fit=True, matching="hungarian",
                      return_predictions=True)
    own = Segmenter(PixelExtractor(stride=8), EigshSpectralClustering(4, random_state=0))
    maps = own.fit_predict(data.images())
    for predicted, expected in zip(scores["predictions"], maps, strict=True):
        np.testing.assert_array_equal(predicted, expected)
    reference = hungarian_scores(data.masks(), maps, data.n_classes)
    assert scores["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-12)

    calls = []

    def fake_crf(image, scores, **params):  # the CRF's answer: everything is label 0
        calls.append(scores.shape)
        return np.zeros(scores.shape[:2], np.int64)

    monkeypatch.setattr(segmenter_module, "dense_crf", fake_crf)
    monkeypatch.setattr(segmenter_module, "_import_densecrf", lambda: None)
    crf = Segmenter(PixelExtractor(stride=8), KMeans(4, n_init=2, random_state=0), crf=True)
    crf.fit(data.images())
    result = evaluate(crf, data, protocol="sliding", crop_size=32, stride=16,
                      return_predictions=True)
    assert all((p == 0).all() for p in result["predictions"])
    assert len(calls) == len(data)  # once per image, on the averaged scores


def test_evaluation_inputs_and_windows_are_checked():
    seg = ColourSegmenter([0, 1, 2, 3])
    image = PALETTE[np.zeros((20, 30), int)]
    for window, stride in [(8, 0), (8, -2), (0, 1)]:
        with pytest.raises(ValueError, match="window and stride must be positive ints"):
            sliding_window_scores(seg, image, window=window, stride=stride)
    with pytest.raises(ValueError, match="the protocol returned a \\(24, 40\\) mask for a "
                                         "\\(12, 12\\) image"):
        evaluate(seg, ColourDataset(n_images=1), protocol=lambda i, m: (i[:12, :12], m))
    with pytest.raises(ValueError, match="must be uint8 RGB arrays"):
        reco_protocol(image.astype(np.float32) / 255, np.zeros((20, 30), int), 16)


def test_image_paths_in_a_dataset_are_read(tmp_path):
    from PIL import Image

    image, mask = ColourDataset(n_images=1)[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    seg = ColourSegmenter([0, 1, 2, 3])
    from_path = evaluate(seg, [(tmp_path / "a.png", mask)], protocol=None)
    from_array = evaluate(seg, [(image, mask)], protocol=None)
    assert from_path["mean_iou"] == from_array["mean_iou"] == 1.0
