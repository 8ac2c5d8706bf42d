"""[`segment_image`][segment_image]: K regions of one photo at its full resolution.

The shortcut for a single image: one clustering fitted on the tokens of this image alone,
on the per-image graph (feature kNN graph + pixel colour/position graph), as in Deep
Spectral Methods and scikit-learn's coins example.
"""

from __future__ import annotations

import numpy as np

from .segmenter import Segmenter

__all__ = ["segment_image"]


def segment_image(image, n_clusters: int = 8, *, method: str = "eigsh", extractor="pixel",
                  kernel=None, random_state=None, verbose: bool = False,
                  **estimator_params) -> np.ndarray:
    """Segment one image into ``n_clusters`` regions, at the image's full resolution.

    Fits ``method`` on the tokens of this image alone (a
    [`Segmenter`][Segmenter] with one image) and returns its label map.

    Parameters
    ----------
    image : path, PIL image or ndarray of shape (H, W, 3)
        The photo.
    n_clusters : int, default=8
        Number of regions K.
    method : str, default="eigsh"
        A registered estimator ([`list_estimators`][spectralnet_seg.cluster.list_estimators]):
        ``"eigsh"`` (exact, seconds on a photo), ``"neural"``, ``"discrete"`` or ``"kmeans"``
        (on the features alone, no graph).
    extractor : str or FeatureExtractor, default="pixel"
        Token features: ``"pixel"`` (colour and texture, offline) or ``"timm:<model>"``
        (see [`make_extractor`][spectralnet_seg.features.make_extractor]).
    kernel : str or Kernel, optional
        Affinity of the spectral methods; by default ``"paper"``, the cosine kNN graph of
        the features plus 0.3 x the image's pixel graph on colour and position
        ([`paper_kernel`][spectralnet_seg.kernels.paper_kernel]), whose neighbour count is capped to
        the image's tokens. Not used by ``"kmeans"``.
    random_state : int, RandomState instance or None, default=None
        Seed of the estimator.
    verbose : bool, default=False
        Progress of the extraction and of the estimator's fit.
    **estimator_params
        Other parameters of the estimator (e.g. ``max_iter`` of the neural ones). Unless
        given, ``embedding_norm="auto"`` (eigsh, neural): of the two row scalings, the one
        whose regions have the lower normalised cut on the image's graph.

    Returns
    -------
    ndarray of shape (H, W), int64
        Region id of every pixel, in ``[0, n_clusters)``.

    See Also
    --------
    Segmenter : fits one clustering across many images (segments mean the same in each).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((64, 96, 3), np.uint8)
    >>> image[:, 48:] = (200, 30, 30)  # a red right half
    >>> labels = segment_image(image, n_clusters=2, random_state=0)
    >>> labels.shape, len(np.unique(labels[:, :40])), len(np.unique(labels[:, 56:]))
    ((64, 96), 1, 1)
    """
    from ..cluster import estimator_defaults, make_estimator
    from ..features import make_extractor

    defaults = estimator_defaults(method)
    if kernel is not None and "kernel" not in defaults:
        raise ValueError(f"method={method!r} uses no kernel; leave kernel=None")
    feature_extractor = make_extractor(extractor) if isinstance(extractor, str) else extractor
    extracted = feature_extractor.extract([image])
    params = dict(estimator_params, random_state=random_state)
    if "kernel" in defaults:
        params["kernel"] = kernel if kernel is not None else _image_kernel(
            extracted.flatten().shape[0])
    if "embedding_norm" in defaults:
        # One photo, no labels: keep the row scaling with the lower normalised cut.
        params.setdefault("embedding_norm", "auto")
    if "verbose" in defaults and method != "kmeans":  # KMeans prints every iteration
        params.setdefault("verbose", verbose)
    segmenter = Segmenter(feature_extractor, make_estimator(method, n_clusters, **params),
                          verbose=verbose)
    segmenter._validate_params()
    segmenter.extractor_ = feature_extractor
    segmenter._fit_extracted(extracted)
    return segmenter._fitted_label_maps([image], extracted)[0]


def _image_kernel(n_tokens: int):
    """The paper's kernel with its k capped to the tokens of the image."""
    from ..kernels import paper_kernel

    kernel = paper_kernel()
    kernel.cap_neighbors(max(n_tokens - 1, 1))
    return kernel
