"""Segmenter: images in, full-resolution label maps out, clusters shared across images."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _reference import hungarian_scores
from PIL import Image
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import InvalidParameterError

from spectralnet_seg.features import ExtractedFeatures, FeatureExtractor, cell_means
from spectralnet_seg.features import token_positions as grid_positions
from spectralnet_seg.images import load_images
from spectralnet_seg.kernels.spatial_color import TokenContext, paper_kernel
from spectralnet_seg.segmentation import Segmenter, dense_crf, upsample_scores

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


class MeanColorExtractor(FeatureExtractor):
    """Cell-mean RGB on a ``stride``-pixel grid: the smallest honest extractor."""

    def __init__(self, stride: int = 4):
        self.stride = stride

    def extract(self, images) -> ExtractedFeatures:
        arrays = load_images(images, min_size=self.stride)
        grid = (arrays[0].shape[0] // self.stride, arrays[0].shape[1] // self.stride)
        colors = np.stack([cell_means(a / 255.0, grid) for a in arrays])
        positions = np.broadcast_to(grid_positions(*grid), (len(arrays), *grid, 2))
        return ExtractedFeatures(colors, colors, positions, [a.shape[:2] for a in arrays])


def two_colour_image(height=32, width=32, left=RED, right=BLUE, split=0.5):
    image = np.empty((height, width, 3), dtype=np.uint8)
    cut = int(round(width * split))
    image[:, :cut], image[:, cut:] = left, right
    return image


def kmeans(k=2):
    return KMeans(k, n_init=3, random_state=0)


def test_meta_estimators_as_the_clusterer():
    """A Pipeline or a search has no n_clusters of its own (was a TypeError); a clusterer
    that declares nothing is counted from its predictions."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images = [two_colour_image(), two_colour_image(left=BLUE, right=RED, split=0.25)]
    plain = Segmenter(MeanColorExtractor(), kmeans()).fit(images)
    piped = Segmenter(MeanColorExtractor(), make_pipeline(StandardScaler(), kmeans()))
    piped.fit(images)
    assert piped.n_labels_ == 2
    for a, b in zip(plain.predict(images), piped.predict(images), strict=True):
        assert adjusted_rand_score(a.ravel(), b.ravel()) == 1.0

    class Undeclared(BaseEstimator, ClusterMixin):  # labels 0..1 from predict only
        def fit(self, X, y=None):
            return self

        def predict(self, X):
            return (X[:, 0] > X[:, 0].mean()).astype(int)

    assert Segmenter(MeanColorExtractor(), Undeclared()).fit(images).n_labels_ == 2
    search = GridSearchCV(kmeans(), {"n_clusters": [2]}, cv=2, scoring=lambda e, X: 0.0)
    assert Segmenter(MeanColorExtractor(), search).fit(images).n_labels_ == 2


def test_fit_shares_clusters_across_images_and_predicts_at_full_resolution():
    images = [two_colour_image(), two_colour_image(left=BLUE, right=RED, split=0.25)]
    seg = Segmenter(MeanColorExtractor(), kmeans()).fit(images)
    maps = seg.predict(images)
    assert [m.shape for m in maps] == [(32, 32), (32, 32)]
    assert all(m.dtype == np.int64 for m in maps)
    red, blue = maps[0][0, 0], maps[0][0, -1]
    assert red != blue
    # The same colour gets the same cluster in the other image (semantic, not per image).
    assert maps[1][0, 0] == blue and maps[1][0, -1] == red
    assert seg.n_labels_ == 2 and seg.grid_shape_ == (8, 8) and seg.n_features_in_ == 3


def test_new_images_of_other_sizes_are_segmented_at_their_own_resolution():
    seg = Segmenter(MeanColorExtractor(), kmeans()).fit([two_colour_image()])
    big = two_colour_image(48, 64, left=BLUE, right=RED)
    (labels,) = seg.predict(big)
    assert labels.shape == (48, 64)
    # Bilinear score upsampling keeps the straight border where it is (±1 token).
    columns = np.flatnonzero(labels[0] != labels[0, 0])
    assert abs(columns[0] - 32) <= 4 and (labels[:, :28] == labels[0, 0]).all()


def test_images_of_several_sizes_share_one_input_size_in_fit_and_predict():
    """fit crashed on more than batch_size images of several sizes (token grids that could
    not be stacked), and an image's label map depended on the other images of its batch."""
    from spectralnet_seg.features import PixelExtractor

    rng = np.random.default_rng(0)
    images = [two_colour_image(32, 48), two_colour_image(40, 24, left=BLUE, right=GREEN),
              rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)]
    extractor = PixelExtractor()
    seg = Segmenter(extractor, kmeans(3), batch_size=1).fit(images)
    assert seg.input_size_ == (32, 48) and seg.extractor_ is extractor
    whole = Segmenter(extractor, kmeans(3)).fit(images)  # one batch: the same features
    np.testing.assert_array_equal(seg.estimator_.labels_, whole.estimator_.labels_)
    alone = seg.predict(images[1])[0]
    assert alone.shape == (40, 24)
    np.testing.assert_array_equal(seg.predict([images[0], images[1]])[1], alone)
    np.testing.assert_array_equal(
        Segmenter(extractor, kmeans(3), batch_size=2).fit(images).predict(images)[1],
        whole.predict(images)[1])
    # A new image keeps its own resolution: a 12-pixel stripe of a 128 x 512 image is found
    # (resized to the 32 x 48 training size it would fall between tokens).
    stripe = two_colour_image(128, 512, left=RED, right=RED)
    stripe[:, 250:262] = BLUE
    seg = Segmenter(PixelExtractor(position_weight=0), kmeans(2)).fit(
        [two_colour_image(32, 48)])
    (labels,) = seg.predict(stripe)
    assert (labels[:, 252:260] != labels[0, 0]).mean() > 0.9
    assert seg.transform(stripe)[0].shape[:2] == (16, 64)  # its own token grid, as predict


def test_image_inputs_paths_pil_greyscale_and_rgba_are_accepted(tmp_path):
    rgb = two_colour_image()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    grey = rgb.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    seg = Segmenter(MeanColorExtractor(), kmeans()).fit([path, Image.fromarray(rgb)])
    maps = seg.predict([str(path), Image.fromarray(rgb), rgb, grey, rgba])
    assert all(m.shape == (32, 32) for m in maps)
    np.testing.assert_array_equal(maps[0], maps[2])
    np.testing.assert_array_equal(maps[4], maps[2])  # opaque RGBA = its RGB


def test_bad_images_give_clear_errors(tmp_path):
    seg = Segmenter(MeanColorExtractor(stride=8), kmeans())
    with pytest.raises(FileNotFoundError, match="not found"):
        seg.fit([tmp_path / "missing.png"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="corrupt"):
        seg.fit([corrupt])
    with pytest.raises(ValueError, match="smaller than the minimum 8x8"):
        seg.fit([two_colour_image(), np.zeros((5, 40, 3), np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        seg.fit([])
    with pytest.raises(TypeError, match=r"images\[0\] must be a file path.*got int"):
        seg.fit(42)  # an int is an image index, for precomputed features only
    with pytest.raises(ValueError, match="at least 2"):
        Segmenter(MeanColorExtractor(stride=8), kmeans(1)).fit(np.zeros((8, 8, 3), np.uint8))


def test_parameters_are_validated_and_predict_needs_fit():
    with pytest.raises(ValueError, match="upsample"):
        Segmenter(MeanColorExtractor(), kmeans(), upsample="cubic").fit([two_colour_image()])
    with pytest.raises(ValueError, match="estimator"):
        Segmenter(MeanColorExtractor(), "kmeans").fit([two_colour_image()])
    with pytest.raises(NotFittedError):
        Segmenter(MeanColorExtractor(), kmeans()).predict([two_colour_image()])


def test_predict_proba_exists_only_when_the_estimator_has_it():
    images = [two_colour_image(), two_colour_image(left=GREEN)]
    seg = Segmenter(MeanColorExtractor(), GaussianMixture(3, random_state=0)).fit(images)
    (proba,) = seg.predict_proba(images[:1])
    assert proba.shape == (32, 32, 3)
    np.testing.assert_allclose(proba.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=2), seg.predict(images[:1])[0])
    assert not hasattr(Segmenter(MeanColorExtractor(), kmeans()), "predict_proba")
    # Without probabilities, scores are the upsampled one-hot labels.
    hard = Segmenter(MeanColorExtractor(), kmeans()).fit(images)
    (scores,) = hard.predict_scores(images[:1])
    np.testing.assert_array_equal(scores.argmax(axis=2), hard.predict(images[:1])[0])


def test_nearest_upsampling_copies_token_labels_into_blocks():
    seg = Segmenter(MeanColorExtractor(), kmeans(), upsample="nearest")
    (labels,) = seg.fit_predict([two_colour_image(split=0.375)])
    blocks = labels.reshape(8, 4, 8, 4)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_upsample_scores_refuses_bad_sizes_and_empty_grids():
    scores = np.ones((2, 2, 3))
    for size in [(0, 4), (3,), (-1, 5), (2.5, 4)]:  # (0, 4) was a ZeroDivisionError
        with pytest.raises(ValueError, match="size must be a pair"):
            upsample_scores(scores, size)
    with pytest.raises(ValueError, match="no empty axis"):
        upsample_scores(np.ones((0, 2, 3)), (4, 4))
    assert upsample_scores(scores, (4.0, 5)).shape == (4, 5)  # integral floats are fine


def test_upsample_scores_matches_torch_bilinear_interpolation():
    import torch

    scores = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    labels, full = upsample_scores(scores, (23, 31), return_scores=True)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(scores).permute(2, 0, 1)[None], size=(23, 31), mode="bilinear",
        align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(full, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.argmax(axis=2))
    with pytest.raises(ValueError, match="bilinear"):
        upsample_scores(scores, (4, 4), mode="bicubic")


class ContextRecorder(ClusterMixin, BaseEstimator):
    """k-means that also records the token context a Segmenter passes to it."""

    def __init__(self, kernel=None, n_clusters=2):
        self.kernel = kernel
        self.n_clusters = n_clusters

    def fit(self, X, y=None, context=None):
        self.context_ = context
        self.kmeans_ = KMeans(self.n_clusters, n_init=3, random_state=0).fit(X)
        return self

    def predict(self, X, context=None):
        self.predict_context_ = context
        return self.kmeans_.predict(X)


def test_context_reaches_estimators_whose_kernel_needs_it():
    images = [two_colour_image(), two_colour_image(left=GREEN)]
    seg = Segmenter(MeanColorExtractor(), ContextRecorder(paper_kernel(8))).fit(images)
    assert seg.uses_context_
    ctx = seg.estimator_.context_
    assert isinstance(ctx, TokenContext) and len(ctx) == 2 * 64
    np.testing.assert_array_equal(ctx.image_ids, np.repeat([0, 1], 64))
    np.testing.assert_allclose(ctx.colors[0], np.array(RED) / 255.0, atol=1e-6)
    seg.predict(images[:1])
    assert len(seg.estimator_.predict_context_) == 64
    # A plain-feature kernel gets no context.
    plain = Segmenter(MeanColorExtractor(), ContextRecorder("knn")).fit(images)
    assert not plain.uses_context_ and plain.estimator_.context_ is None


def test_context_kernel_with_an_estimator_that_cannot_take_it_is_refused():
    class NoContext(ContextRecorder):
        def fit(self, X, y=None):
            return super().fit(X)

    with pytest.raises(ValueError, match="does not accept a 'context'"):
        Segmenter(MeanColorExtractor(), NoContext(paper_kernel(8))).fit([two_colour_image()])


def test_crf_without_pydensecrf_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    seg = Segmenter(MeanColorExtractor(), GaussianMixture(2, random_state=0), crf=True)
    with pytest.raises(ImportError, match=r"spectralnet-seg\[crf\]"):
        seg.fit([two_colour_image()])  # before the fit's work, not at the first predict
    seg.set_params(crf=None).fit([two_colour_image()]).set_params(crf=True)
    with pytest.raises(ImportError, match=r"spectralnet-seg\[crf\]"):
        seg.predict([two_colour_image()])
    with pytest.raises(ImportError, match=r"spectralnet-seg\[crf\]"):
        seg.fit_predict([two_colour_image()])
    # A crf value that is no parameter at all is that error first, as in fit (was ImportError).
    bad = Segmenter(MeanColorExtractor(), GaussianMixture(2, random_state=0), crf="yes")
    for method in (bad.fit, bad.fit_predict):
        with pytest.raises(InvalidParameterError, match="crf"):
            method([two_colour_image()])


def test_dense_crf_rejects_unknown_parameters():
    with pytest.raises(ValueError, match="unknown CRF parameters"):
        dense_crf(two_colour_image(), np.ones((32, 32, 2)) / 2, n_iterations=3)


def test_dense_crf_gets_the_image_as_uint8_rgb(monkeypatch):
    # A float image in [0, 1] used to be cast to uint8 as all zeros: no colour edge left.
    from spectralnet_seg import postprocessing
    seen = {}

    class FakeCRF:
        def __init__(self, W, H, K):
            self.K, self.H, self.W = K, H, W

        def setUnaryEnergy(self, unary):
            pass

        def addPairwiseGaussian(self, **kwargs):
            pass

        def addPairwiseBilateral(self, *, rgbim, **kwargs):
            seen["rgbim"] = rgbim

        def inference(self, n_iter):
            return np.ones((self.K, self.H * self.W), dtype=np.float32)

    fake = type("dcrf", (), {"DenseCRF2D": FakeCRF})
    monkeypatch.setattr(postprocessing, "_import_densecrf",
                        lambda: (fake, lambda p: -np.log(p).reshape(p.shape[0], -1)))
    image = two_colour_image(32, 32)
    dense_crf(image.astype(np.float32) / 255, np.ones((32, 32, 2)) / 2)
    np.testing.assert_array_equal(seen["rgbim"], image)
    with pytest.raises(ValueError, match="image's"):
        dense_crf(image, np.ones((16, 32, 2)) / 2)


def test_upsample_scores_refuses_non_finite_scores():
    # One NaN token made the whole image NaN in its channel and took every pixel's argmax.
    scores = np.full((4, 4, 3), 0.3, dtype=np.float32)
    scores[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        upsample_scores(scores, (16, 16))


def test_dense_crf_snaps_blurry_scores_to_the_colour_edge():
    pytest.importorskip("pydensecrf.densecrf", reason="the optional 'crf' extra is not installed")
    image = two_colour_image(32, 32)
    ramp = np.linspace(0.8, 0.2, 32, dtype=np.float32)[None, :].repeat(32, 0)  # blurry border
    probabilities = np.stack([ramp, 1 - ramp], axis=2)
    labels = dense_crf(image, probabilities)
    assert (labels[:, :16] == 0).mean() > 0.95 and (labels[:, 16:] == 1).mean() > 0.95


TINY_VIT = dict(depth=3, embed_dim=32, num_heads=2)


def test_random_init_tiny_vit_segments_end_to_end_and_loads_a_local_checkpoint(tmp_path):
    import torch

    from spectralnet_seg.cluster import EigshSpectralClustering
    from spectralnet_seg.datasets import TextureMosaics
    from spectralnet_seg.evaluation import evaluate
    from spectralnet_seg.features import TimmExtractor

    data = TextureMosaics(n_images=3, image_size=64, seed=0)
    images = data.images()
    vit = TimmExtractor("vit_tiny_patch16_224", pretrained=False, layers="paper",
                        model_kwargs=TINY_VIT, device="cpu")
    seg = Segmenter(vit, EigshSpectralClustering(4, kernel="knn", random_state=0))
    seg.fit(images)
    assert seg.grid_shape_ == (4, 4) and seg.n_features_in_ == 3 * 32
    maps = seg.predict(images[:2] + [np.zeros((50, 70, 3), np.uint8)])
    assert [m.shape for m in maps] == [(64, 64), (64, 64), (50, 70)]
    scores = evaluate(seg, data, protocol=None, matching="hungarian")
    reference = hungarian_scores(data.masks(), seg.predict(images), data.n_classes)
    assert scores["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(reference["pixel_accuracy"], abs=1e-12)

    # The same weights through a local checkpoint file give the same segmentation.
    checkpoint = tmp_path / "tiny_vit.pth"
    torch.save(vit.model_.state_dict(), checkpoint)
    local = TimmExtractor("vit_tiny_patch16_224", pretrained=False, checkpoint_path=checkpoint,
                          layers="paper", model_kwargs=TINY_VIT, device="cpu")
    reloaded = Segmenter(local, EigshSpectralClustering(4, kernel="knn", random_state=0))
    np.testing.assert_array_equal(reloaded.fit(images).predict(images[:1])[0], maps[0])
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        Segmenter(TimmExtractor("vit_tiny_patch16_224", pretrained=False,
                                checkpoint_path=tmp_path / "missing.pth",
                                model_kwargs=TINY_VIT),
                  EigshSpectralClustering(4)).fit(images)


def test_extractor_by_name_and_images_smaller_than_a_patch():
    seg = Segmenter("pixel", KMeans(3, n_init=2, random_state=0)).fit([two_colour_image()])
    assert type(seg.extractor_).__name__ == "PixelExtractor"
    with pytest.raises(ValueError, match="smaller than the minimum 8x8"):
        seg.predict([np.zeros((6, 6, 3), np.uint8)])
    # The error names the image by its place in the caller's list (it said images[0]).
    image = two_colour_image()
    for batch_size in (1, 8):
        seg.set_params(batch_size=batch_size)
        with pytest.raises(ValueError, match=r"images\[2\] is 6x6 pixels"):
            seg.predict([image, image, np.zeros((6, 6, 3), np.uint8)])


def test_segmenter_with_crf_refines_full_resolution_labels():
    pytest.importorskip("pydensecrf.densecrf", reason="the optional 'crf' extra is not installed")
    images = [two_colour_image(32, 32, split=0.4375), two_colour_image(32, 32)]
    seg = Segmenter(MeanColorExtractor(stride=8), GaussianMixture(2, random_state=0),
                    crf={"n_iter": 5}).fit(images)
    (labels,) = seg.predict(images[:1])
    # Column 14 is the colour edge, inside a token: the CRF puts the border on it.
    assert (labels[:, :14] == labels[0, 0]).all() and (labels[:, 14:] != labels[0, 0]).all()


# ----------------------------------------------------------------------------- one image


def four_region_photo(height=96, width=128, seed=0):
    """A made-up photo: four quadrants of different colours and textures, plus noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[: height // 2, width // 2:] = 1
    truth[height // 2:, : width // 2] = 2
    truth[height // 2:, width // 2:] = 3
    palette = np.array([[200, 60, 40], [40, 160, 60], [50, 70, 200], [220, 210, 90]])
    image = palette[truth].astype(float)
    stripes = 25 * np.sin(np.arange(width) / 2.0)[None, :]  # texture in one quadrant
    image[truth == 3] += stripes.repeat(height, 0)[truth == 3][:, None]
    image += rng.normal(0, 12, image.shape)
    return image.clip(0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("method", ["eigsh", "kmeans"])
def test_segment_image_finds_the_regions_of_one_photo_at_full_resolution(method):
    from sklearn.metrics import adjusted_rand_score

    from spectralnet_seg.segmentation import segment_image

    image, truth = four_region_photo()
    labels = segment_image(image, n_clusters=4, method=method, random_state=0)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int64
    assert set(np.unique(labels)) <= set(range(4))
    # Region borders are blurred by the 8-pixel token grid; the regions themselves are found.
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.85


@pytest.mark.filterwarnings("ignore:DiscreteNeuralEigenClustering stopped at max_iter")
def test_segment_image_with_a_pure_black_band():
    """Flat black cells have all-zero pixel features; the paper kernel's cosine needs a
    direction (it used to refuse them as zero rows): they get that of a flat dark grey."""
    from sklearn.metrics import adjusted_rand_score

    from spectralnet_seg.features import PixelExtractor
    from spectralnet_seg.segmentation import segment_image

    image = np.zeros((64, 160, 3), np.uint8)  # a letterbox band left of a red area
    image[:, 96:] = (200, 30, 30)
    truth = np.zeros(image.shape[:2], int)
    truth[:, 96:] = 1
    features = PixelExtractor().extract(image).features.reshape(-1, 15)
    black = ~features[:, 1:].any(axis=1)  # everything but the lightness is 0
    assert black.sum() > 0 and np.all(features[black, 0] == 1e-6)
    grey = PixelExtractor().extract(np.full((32, 32, 3), 60, np.uint8)).features.reshape(-1, 15)
    cosine = features[black] @ grey.T / np.outer(np.linalg.norm(features[black], axis=1),
                                                 np.linalg.norm(grey, axis=1))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-6)  # the direction of any flat grey
    for method in ("eigsh", "discrete"):  # the cosine paper kernel: ran into the zero rows
        labels = segment_image(image, n_clusters=2, method=method, random_state=0,
                               **({"max_iter": 5} if method == "discrete" else {}))
        assert labels.shape == image.shape[:2] and set(np.unique(labels)) <= {0, 1}
    labels = segment_image(image, n_clusters=2, method="kmeans", random_state=0)
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) == 1.0


def test_segment_image_neural_on_fewer_tokens_than_the_paper_k():
    from spectralnet_seg.segmentation import segment_image

    image, _ = four_region_photo()  # 12 x 16 = 192 tokens < k = 256 of the paper kernel
    labels = segment_image(image, n_clusters=4, method="discrete", max_iter=5, random_state=0)
    assert labels.shape == image.shape[:2] and labels.max() < 4


def test_segmenter_fit_predict_on_a_single_image():
    from sklearn.metrics import adjusted_rand_score

    from spectralnet_seg.cluster import EigshSpectralClustering
    from spectralnet_seg.features import PixelExtractor

    image, truth = four_region_photo()
    # embedding_norm="auto", as segment_image uses: on this image the "row" scaling has the
    # lower normalised cut (1.46 against 1.53 for the "degree" default) and finds the regions.
    seg = Segmenter(PixelExtractor(), EigshSpectralClustering(4, kernel=paper_kernel(),
                                                              embedding_norm="auto",
                                                              random_state=0))
    with pytest.warns(UserWarning, match="using 191"):  # k = 256 capped to the 192 tokens
        (labels,) = seg.fit_predict([image])
    assert labels.shape == (96, 128)
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.85


def test_segment_image_errors():
    from spectralnet_seg.segmentation import segment_image

    image, _ = four_region_photo()
    with pytest.raises(ValueError, match="uses no kernel"):
        segment_image(image, method="kmeans", kernel="knn")
    with pytest.raises(ValueError, match="unknown estimator 'spectral'"):
        segment_image(image, method="spectral")
    with pytest.raises(ValueError, match="'eigsh' .* no parameter.* max_iter"):
        segment_image(image, method="eigsh", max_iter=5)


def test_eigsh_label_maps_of_the_fitted_photo_are_the_fits_own_labels():
    # A photo at gallery size (400 pixel-extractor tokens). eigsh labels its tokens from
    # their graph; re-predicting them by the Nyström extension merged regions (2 of 8 on
    # this photo). segment_image and fit_predict must return the labels of the fit itself:
    # checked against an estimator fitted here, independently, on the same tokens.
    from skimage import data
    from skimage.transform import resize

    from spectralnet_seg.cluster import EigshSpectralClustering
    from spectralnet_seg.features import make_extractor
    from spectralnet_seg.segmentation import segment_image
    from spectralnet_seg.segmentation.single_image import _image_kernel

    image = (resize(data.astronaut(), (160, 160), anti_aliasing=True) * 255).astype(np.uint8)
    extracted = make_extractor("pixel").extract([image])
    X = extracted.flatten()
    reference = EigshSpectralClustering(8, kernel=_image_kernel(len(X)), embedding_norm="auto",
                                        random_state=0).fit(
        X, context=TokenContext.from_features(extracted))
    seg = Segmenter("pixel", EigshSpectralClustering(
        8, kernel=_image_kernel(len(X)), embedding_norm="auto", random_state=0),
        upsample="nearest")
    for labels in (segment_image(image, 8, method="eigsh", random_state=0),
                   seg.fit_predict([image])[0]):
        assert labels.shape == (160, 160)
        assert len(np.unique(labels)) == 8
        h, w = extracted.grid_shape
        centres = labels[(np.arange(h) * 160 // h + 160 // (2 * h))[:, None],
                         (np.arange(w) * 160 // w + 160 // (2 * w))[None, :]]
        np.testing.assert_array_equal(centres.ravel(), reference.labels_)


def test_fit_warns_when_images_of_another_shape_are_stretched(tmp_path):
    """Fit brings every image to the first one's size: a portrait strip fitted after a
    landscape one was squashed (its red and blue halves averaged into one region) without a
    word. Images of the first one's shape, at another scale, are not warned about."""
    import warnings

    wide = two_colour_image(8, 200)  # red left, blue right
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))  # red top, blue below
    Image.fromarray(tall).save(tmp_path / "tall.png")
    with pytest.warns(UserWarning, match=r"1 of 2 images have another aspect ratio than the "
                                         r"first one \(8x200\), e.g. images\[1\] \(200x8\)"):
        Segmenter("pixel", kmeans()).fit([wide, tmp_path / "tall.png"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Segmenter("pixel", kmeans()).fit([two_colour_image(32, 48), two_colour_image(64, 96)])
    # predict extracts each image at its own size: the strip keeps its two halves
    labels = Segmenter("pixel", kmeans()).fit([wide]).predict([tall])[0]
    assert labels.shape == (200, 8) and labels[0, 0] != labels[-1, 0]


def test_fit_names_the_failing_image_by_its_place_in_the_whole_list():
    """Images after the first batch_size were numbered from their batch: the 3x3 image at
    index 3 was reported as images[1]."""
    images = [two_colour_image(), two_colour_image(), two_colour_image(),
              np.zeros((3, 3, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"images\[3\] is 3x3 pixels"):
        Segmenter("pixel", kmeans(), batch_size=2).fit(images)


@pytest.mark.parametrize("images", [{"a.png", "b.png"}, {"a": "a.png"}])
def test_segmenter_refuses_unordered_image_collections(images):
    """A set was segmented in hash order (label maps in another order per PYTHONHASHSEED,
    and the first image, whose size every image is brought to, chosen by it); a dict's keys
    were read as file names."""
    for method in ("fit", "fit_predict"):
        with pytest.raises(TypeError, match="whose order is not the images'"):
            getattr(Segmenter("pixel", kmeans()), method)(images)


def test_renumbered_extraction_errors_keep_their_class():
    """Renumbering images[j] for batches after the first turned an ImageMemoryError (a
    MemoryError too) into a plain ValueError: `except MemoryError` no longer caught it."""
    from spectralnet_seg.features import ImageMemoryError

    class Failing(MeanColorExtractor):
        def extract(self, images):
            if len(images) and images[0].shape[0] == 40:
                raise ImageMemoryError("images[0] would need 9 GiB")
            return super().extract(images)

    images = [two_colour_image(), two_colour_image(40, 40)]
    with pytest.raises(ImageMemoryError, match=r"images\[1\] would need") as caught:
        Segmenter(Failing(), kmeans(), batch_size=1).extract(images)
    assert isinstance(caught.value, MemoryError)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_too_many_clusters_is_said_in_tokens_only_when_the_fit_fails():
    """The token-worded error replaces the estimator's "n_samples" one; Birch, whose
    n_clusters is a bound, still fits (it warns and finds fewer)."""
    from sklearn.cluster import Birch

    image = two_colour_image(24, 32)
    with pytest.raises(ValueError, match=r"n_clusters=13 is more than the 12 tokens the images "
                                         r"gave \(the extractor's 3x4 grid per image\)"):
        Segmenter("pixel", KMeans(13, n_init=1)).fit([image])
    Segmenter("pixel", Birch(n_clusters=13)).fit([image])
