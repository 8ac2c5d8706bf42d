"""``Segmenter``: images in, label maps out — a feature extractor plus a spectral estimator.

One clustering is fitted across the tokens of a set of images; predictions are brought back
to each image's full resolution (the package docstring of ``spectralnet_seg.segmentation``
says how), optionally refined by a dense CRF.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._utils import accepts_keyword, is_integer, progress, user_stacklevel
from ..features._base import shared_input_size
from ..images import load_image
from ..kernels import TokenContext, kernel_tags
from ..postprocessing import _import_densecrf, dense_crf, upsample_scores
from ._inputs import _as_image_list

__all__ = ["Segmenter"]


def _extract_numbered(extractor, images: list, offset: int, **kwargs):
    """``extractor.extract(images, **kwargs)``; an error naming ``images[j]`` of this call
    names it by its place in the caller's list (``images[offset + j]``) instead."""
    try:
        return extractor.extract(images, **kwargs)
    except ValueError as err:
        message = re.sub(r"\bimages\[(\d+)\]",
                         lambda m: f"images[{offset + int(m.group(1))}]", str(err))
        if offset == 0 or message == str(err):
            raise
        # Same class (an ImageMemoryError stays a MemoryError too), renumbered message.
        renumbered = copy.copy(err)
        renumbered.args = (message, *err.args[1:])
        raise renumbered from err


def _stored_size(image) -> tuple[int, int] | None:
    """``(H, W)`` of an image as stored, from a file's header alone; None when unknown."""
    from PIL import Image

    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return image.shape[:2]
    if isinstance(image, Image.Image):
        return image.size[::-1]
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                return opened.size[::-1]
        except (OSError, ValueError):  # reported, with its name, when the image is loaded
            return None
    return None


# Aspect ratios (W / H) further than this factor from the first image's are squashed.
_ASPECT_TOLERANCE = 1.1


def _warn_if_resized_out_of_shape(images: list, size: tuple[int, int]) -> None:
    """Warn when ``fit`` brings images of another aspect ratio to the first image's size.

    A portrait photo fitted beside a landscape one was squashed to the landscape grid, its
    colours averaged across regions, and its ``fit_predict`` label map stretched back from
    that grid, without a word (``predict`` extracts each new image at its own size).
    """
    aspect = size[1] / size[0]
    squashed = []
    for index, image in enumerate(images[1:], start=1):
        hw = _stored_size(image)
        if hw is not None and hw[0] > 0 and hw[1] > 0:
            ratio = (hw[1] / hw[0]) / aspect
            if max(ratio, 1 / ratio) > _ASPECT_TOLERANCE:
                squashed.append((index, hw))
    if squashed:
        (index, (h, w)), n = squashed[0], len(squashed)
        warnings.warn(
            f"{n} of {len(images)} images have another aspect ratio than the first one "
            f"({size[0]}x{size[1]}), e.g. images[{index}] ({h}x{w}): fit extracts every image "
            "at the first one's size, so those are stretched to it, and their label maps from "
            "fit / fit_predict come from the stretched images. Fit on images of one shape (or "
            "crop them first), or segment the others apart (Segmenter.predict extracts each "
            "new image at its own size; from the shell, one segment call per shape).",
            UserWarning, stacklevel=user_stacklevel())


class Segmenter(BaseEstimator):
    """Unsupervised semantic segmentation: a feature extractor and a spectral estimator.

    Parameters
    ----------
    extractor : FeatureExtractor or str
        Produces token features; a string is built with
        [`spectralnet_seg.features.make_extractor`][spectralnet_seg.features.make_extractor]
        (``"pixel"``, ``"timm:<name>"``).
    estimator : estimator with ``fit`` and ``predict``
        A clustering estimator (e.g.
        [`EigshSpectralClustering`][spectralnet_seg.EigshSpectralClustering],
        [`NeuralEigenClustering`][spectralnet_seg.NeuralEigenClustering],
        [`DiscreteNeuralEigenClustering`][spectralnet_seg.DiscreteNeuralEigenClustering],
        scikit-learn's ``KMeans``);
        it is cloned in [`fit`][fit]. When its kernel needs the token context (e.g. the pixel
        graph of [`paper_kernel`][spectralnet_seg.kernels.paper_kernel]), the estimator must accept
        ``fit(X, context=...)``.
    upsample : {"bilinear", "nearest"}, default="bilinear"
        How token scores reach full resolution: bilinear interpolation of the per-token
        probabilities (``predict_proba`` of the estimator, else one-hot labels) followed by
        argmax, or nearest-neighbour copying of token labels.
    crf : None, True or dict, default=None
        Dense-CRF post-processing (needs ``pip install spectralnet-seg[crf]``); a dict
        overrides [`CRF_DEFAULTS`][CRF_DEFAULTS].
    batch_size : int, default=16
        Images per call of the extractor (bounds the memory of feature maps).
    verbose : bool, default=False
        Progress bars over image batches.

    Attributes
    ----------
    extractor_ : FeatureExtractor
        The extractor used (built from the name when ``extractor`` is a string).
    input_size_ : (int, int) or None
        The first training image's size, passed as ``extract(images, size=...)`` in every
        batch of ``fit`` (and of [`extract`][extract] after it) when the extractor's
        ``image_size`` is None (which would mean "each call's first image"): the training
        images share one token grid whatever their sizes and batches. ``predict``,
        ``predict_scores`` and ``transform`` then extract each new image at its own size,
        so that its label map depends on neither. None when the extractor sets its own
        size or takes no ``size`` (batches are then extracted as they come).
    estimator_ : estimator
        The fitted clone of ``estimator``.
    n_labels_ : int
        Number of labels (clusters) that label maps can hold.
    grid_shape_ : (int, int)
        Token grid of the training images.
    n_features_in_ : int
        Dimension of the token features.
    uses_context_ : bool
        Whether the token context was passed to the estimator.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from spectralnet_seg.datasets import TextureMosaics
    >>> from spectralnet_seg.features import PixelExtractor
    >>> images = TextureMosaics(n_images=2, image_size=32).images()
    >>> seg = Segmenter(PixelExtractor(), KMeans(3, n_init=1, random_state=0)).fit(images)
    >>> [m.shape for m in seg.predict(images)]
    [(32, 32), (32, 32)]
    """

    _parameter_constraints: dict = {
        "extractor": [HasMethods(["extract"]), str],
        "estimator": [HasMethods(["fit", "predict"])],
        "upsample": [StrOptions({"bilinear", "nearest"})],
        "crf": [None, "boolean", dict],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(self, extractor, estimator, *, upsample: str = "bilinear", crf=None,
                 batch_size: int = 16, verbose: bool = False):
        self.extractor = extractor
        self.estimator = estimator
        self.upsample = upsample
        self.crf = crf
        self.batch_size = batch_size
        self.verbose = verbose

    # ------------------------------------------------------------------ features
    def _build_extractor(self):
        if isinstance(self.extractor, str):
            from ..features import make_extractor

            return make_extractor(self.extractor)
        return self.extractor

    def extract(self, images):
        """Token features of ``images``, extracted in batches of ``batch_size`` images.

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those
            The images (see ``spectralnet_seg.images.load_image``).

        Returns
        -------
        ExtractedFeatures
            Features (n_images, h, w, d), colours, positions and original image sizes.
        """
        from ..features import ExtractedFeatures

        extractor = getattr(self, "extractor_", None) or self._build_extractor()
        images = _as_image_list(images)
        starts = range(0, len(images), self.batch_size)
        parts = [self._extract_batch(extractor, images[s:s + self.batch_size], s)
                 for s in progress(starts, verbose=self.verbose, desc="extracting features",
                                   total=len(starts))]
        return parts[0] if len(parts) == 1 else ExtractedFeatures.concatenate(parts)

    def _extract_batch(self, extractor, images: list, offset: int):
        """Extract a batch whose first image is ``images[offset]`` of the caller's list (so
        that an error names the right one), at ``input_size_`` when it is set."""
        size = getattr(self, "input_size_", None)
        kwargs = {} if size is None else {"size": size}
        return _extract_numbered(extractor, images, offset, **kwargs)

    # ------------------------------------------------------------------ fit
    def _needs_context(self, estimator) -> bool:
        """Whether the estimator's kernel declares that it needs the token context."""
        try:
            return kernel_tags(getattr(estimator, "kernel", None)).requires_context
        except (ValueError, TypeError):  # a kernel name this package does not know
            return False

    def fit(self, images, y=None):
        """Extract features of ``images`` and fit one clustering across all their tokens.

        Parameters
        ----------
        images : path, PIL image, ndarray of shape (n_images, H, W, 3) or list of images
            Training images (any sizes; the extractor brings them to one token grid).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : Segmenter
        """
        self._fit_images(images)
        return self

    def _fit_images(self, images):
        """Validate, extract ``images`` and fit on their tokens; returns the extraction."""
        self._validate_params()
        self._check_crf_available()
        images = _as_image_list(images)
        self.extractor_ = self._build_extractor()
        self.input_size_ = shared_input_size(self.extractor_, images)
        if self.input_size_ is not None:
            _warn_if_resized_out_of_shape(images, self.input_size_)
        extracted = self.extract(images)
        self._fit_extracted(extracted)
        return extracted

    def _check_crf_available(self) -> None:
        """Fail before any work when ``crf`` is set but the extra is missing."""
        if self.crf is not None and self.crf is not False:
            _import_densecrf()

    def _fit_extracted(self, extracted) -> None:
        estimator = clone(self.estimator)
        X = extracted.flatten()
        if X.shape[0] < 2:
            raise ValueError(
                f"the images gave {X.shape[0]} token(s) in total; clustering needs at least 2. "
                "Use more or larger images, or an extractor with a finer grid.")
        self.uses_context_ = self._needs_context(estimator)
        if self.uses_context_:
            if not accepts_keyword(estimator.fit, "context"):
                raise ValueError(
                    f"the kernel of {type(estimator).__name__} needs the token context (it "
                    "contains a SpatialColorKernel), but "
                    f"{type(estimator).__name__}.fit does not accept a 'context' argument. "
                    "Use a feature-only kernel (e.g. 'knn') with this estimator.")
        try:
            if self.uses_context_:
                estimator.fit(X, context=TokenContext.from_features(extracted))
            else:
                estimator.fit(X)
        except ValueError as err:
            n_clusters = getattr(estimator, "n_clusters", None)
            if not (is_integer(n_clusters) and n_clusters > X.shape[0]):
                raise
            # The estimator spoke of "samples", which here are the extractor's cells (an
            # estimator that takes n_clusters as a bound, as Birch, fits and is not asked).
            h, w = extracted.grid_shape
            raise ValueError(
                f"n_clusters={n_clusters} is more than the {X.shape[0]} tokens the images "
                f"gave (the extractor's {h}x{w} grid per image); ask for fewer clusters, or "
                "use more or larger images, or an extractor with a finer grid.") from err
        self.estimator_ = estimator
        self.grid_shape_ = extracted.grid_shape
        self.n_features_in_ = extracted.n_features
        self.n_labels_ = self._count_labels(estimator, X, extracted)

    def _count_labels(self, estimator, X, extracted) -> int:
        """Number of labels the fitted ``estimator`` makes (the width of the scores)."""
        # A Pipeline's last step, a search's best estimator: their clusterer says.
        inner = getattr(estimator, "_final_estimator", None) or getattr(
            estimator, "best_estimator_", None)
        for candidate in (estimator, inner):
            for attr in ("n_clusters", "n_components"):
                value = getattr(candidate, attr, None)
                if is_integer(value):
                    return int(value)
            labels = getattr(candidate, "labels_", None)
            if labels is not None:
                return int(np.max(labels)) + 1
        if hasattr(estimator, "predict_proba"):
            return int(np.shape(self._call("predict_proba", X, extracted))[1])
        labels = np.asarray(self._call("predict", X, extracted))
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise TypeError(f"cannot tell how many clusters {type(estimator).__name__} makes: "
                            "it has no integer n_clusters / n_components, no labels_, and its "
                            "predictions are not non-negative integer labels")
        return int(labels.max()) + 1

    # ------------------------------------------------------------------ inference
    def _call(self, method: str, X, extracted):
        """``estimator_.<method>(X)``, with the token context when the estimator takes it."""
        func = getattr(self.estimator_, method)
        if self.uses_context_ and accepts_keyword(func, "context"):
            return func(X, context=TokenContext.from_features(extracted))
        return func(X)

    def _token_scores(self, extracted) -> np.ndarray:
        """Per-token scores (n_images, h, w, n_labels): probabilities or one-hot labels."""
        X = extracted.flatten()
        if hasattr(self.estimator_, "predict_proba"):
            scores = np.asarray(self._call("predict_proba", X, extracted), dtype=np.float32)
            return extracted.unflatten(scores)
        return extracted.unflatten(self._one_hot(self._call("predict", X, extracted)))

    def _fitted_token_scores(self, extracted) -> np.ndarray:
        """Per-token scores of the tokens the estimator was fitted on: the fit's own labels.

        A transductive estimator (eigsh) labels its training points from their graph; its
        ``predict`` on those same points goes through an out-of-sample (Nyström) extension,
        which only approximates the graph of the fit (a per-image pixel kernel has no cross
        affinity at all) and can merge regions. The training labels are the fit's answer.
        Estimators with ``predict_proba`` keep their probabilities.
        """
        labels = getattr(self.estimator_, "labels_", None)
        if hasattr(self.estimator_, "predict_proba") or labels is None:
            return self._token_scores(extracted)
        return extracted.unflatten(self._one_hot(labels))

    def _one_hot(self, labels) -> np.ndarray:
        labels = np.asarray(labels).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_labels_):
            raise ValueError(f"{type(self.estimator_).__name__} predicted labels outside "
                             f"[0, {self.n_labels_})")
        scores = np.zeros((len(labels), self.n_labels_), dtype=np.float32)
        scores[np.arange(len(labels)), labels] = 1.0
        return scores

    def _check_extracted(self, extracted) -> None:
        if extracted.n_features != self.n_features_in_:
            raise ValueError(f"the extractor produced {extracted.n_features} features per token "
                             f"but the segmenter was fitted on {self.n_features_in_}")

    def _iter_predictions(self, images, *, want_scores: bool, crf: bool = True):
        """Yield (label map, full-resolution scores or None) per image, batch by batch."""
        check_is_fitted(self, "estimator_")
        images = _as_image_list(images)
        self._check_crf_available()
        for chunk, extracted in self._extracted_batches(images, desc="segmenting"):
            yield from self._full_resolution(chunk, extracted, self._token_scores(extracted),
                                             want_scores=want_scores, crf=crf)

    def _extracted_batches(self, images: list, *, desc: str):
        """Yield ``(images, features)`` of new images, each at its own size, in order.

        Fitting brings every image to one input size (``input_size_``); a new image is
        extracted at its own size (consecutive images of one size share an extractor call),
        so that a label map depends neither on the training images' size nor on the other
        images of its batch. Extractors that take no ``size`` get the batches as they are.
        """
        starts = range(0, len(images), self.batch_size)
        for s in progress(starts, verbose=self.verbose, desc=desc, total=len(starts)):
            chunk = images[s:s + self.batch_size]
            if getattr(self, "input_size_", None) is None:
                extracted = _extract_numbered(self.extractor_, chunk, s)
                self._check_extracted(extracted)
                yield chunk, extracted
                continue
            chunk = [load_image(image, name=f"images[{s + i}]")
                     for i, image in enumerate(chunk)]
            runs = itertools.groupby(enumerate(chunk), key=lambda item: item[1].shape[:2])
            for _, group in runs:
                group = list(group)
                first, run = group[0][0], [image for _, image in group]
                extracted = _extract_numbered(self.extractor_, run, s + first,
                                              size=run[0].shape[:2])
                self._check_extracted(extracted)
                yield run, extracted

    def _full_resolution(self, images: list, extracted, scores: np.ndarray, *,
                         want_scores: bool, crf: bool = True):
        """Yield (label map, scores or None) of each image from its token scores
        (upsampled to the image's size, then refined by the CRF when ``crf`` is set)."""
        use_crf = crf and self.crf is not None and self.crf is not False
        need = want_scores or use_crf
        for i, size in enumerate(extracted.image_sizes):
            out = upsample_scores(scores[i], size, mode=self.upsample, return_scores=need)
            labels, full = out if need else (out, None)
            if use_crf:
                labels = self._refine(images[i], full)
            yield labels, full

    def predict(self, images) -> list[np.ndarray]:
        """Label map of each image at its full resolution.

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those
            Images to segment (new or seen).

        Returns
        -------
        list of ndarray of shape (H_i, W_i), int64
            Cluster id of every pixel, in ``[0, n_labels_)``.
        """
        return [labels for labels, _ in self._iter_predictions(images, want_scores=False)]

    def _has_proba(self) -> bool:
        return hasattr(self.estimator, "predict_proba")

    @available_if(_has_proba)
    def predict_proba(self, images) -> list[np.ndarray]:
        """Per-pixel cluster probabilities at full resolution (bilinearly upsampled).

        Available when the estimator has ``predict_proba``; then the same as
        [`predict_scores`][predict_scores].

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those

        Returns
        -------
        list of ndarray of shape (H_i, W_i, n_labels_), float32
        """
        return self.predict_scores(images)

    def predict_scores(self, images) -> list[np.ndarray]:
        """Per-pixel label scores at full resolution: probabilities or smoothed one-hot labels.

        What [`predict`][predict] takes the argmax of (before any CRF); used for sliding-window
        inference, where the scores of overlapping windows are averaged.

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those

        Returns
        -------
        list of ndarray of shape (H_i, W_i, n_labels_), float32
        """
        return [scores for _, scores in self._iter_predictions(images, want_scores=True,
                                                                crf=False)]

    def _refine(self, image, scores: np.ndarray) -> np.ndarray:
        """Label map from full-resolution ``scores``: the dense CRF's when ``crf`` is set,
        else their argmax (what ``predict`` does after upsampling; sliding-window
        evaluation applies it to the averaged scores).

        Parameters
        ----------
        image : path, PIL image or ndarray of shape (H, W, 3)
        scores : ndarray of shape (H, W, n_labels)

        Returns
        -------
        ndarray of shape (H, W), int64
        """
        if self.crf is None or self.crf is False:
            return np.asarray(scores).argmax(axis=2).astype(np.int64)
        self._check_crf_available()
        return dense_crf(load_image(image), scores, **(self.crf if isinstance(self.crf, dict)
                                                       else {}))

    def fit_predict(self, images, y=None) -> list[np.ndarray]:
        """Fit on ``images`` and return their label maps: the fit's own labels of their
        tokens, upsampled like [`predict`][predict]'s (the images are extracted once).

        Unlike ``fit(images).predict(images)``, this does not re-predict the training tokens
        (for eigsh that would go through the approximate Nyström extension).

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those
        y : Ignored

        Returns
        -------
        list of ndarray of shape (H_i, W_i), int64
        """
        self._validate_params()  # before the crf check, as in fit: a bad crf is a bad parameter
        self._check_crf_available()
        images = _as_image_list(images)
        return self._fitted_label_maps(images, self._fit_images(images))

    def _fitted_label_maps(self, images: list, extracted) -> list[np.ndarray]:
        """Full-resolution label maps of the images the segmenter was just fitted on."""
        scores = self._fitted_token_scores(extracted)
        maps = self._full_resolution(images, extracted, scores, want_scores=False)
        return [labels for labels, _ in progress(maps, verbose=self.verbose, desc="segmenting",
                                                 total=len(images))]

    def _has_transform(self) -> bool:
        return hasattr(self.estimator, "transform")

    @available_if(_has_transform)
    def transform(self, images) -> list[np.ndarray]:
        """The estimator's embedding of every token, as maps on the token grid.

        For the neural and eigsh estimators these are the eigenfunctions ψ_j (see
        [`plot_eigenfunctions`][spectralnet_seg.plotting.plot_eigenfunctions]).

        Parameters
        ----------
        images : path, PIL image, ndarray or a list of those

        Returns
        -------
        list of ndarray of shape (h, w, n_components), float32
        """
        check_is_fitted(self, "estimator_")
        out: list[np.ndarray] = []
        for _, extracted in self._extracted_batches(_as_image_list(images), desc="embedding"):
            emb = np.asarray(self._call("transform", extracted.flatten(), extracted),
                             dtype=np.float32)
            out.extend(extracted.unflatten(emb))
        return out
