"""``Segmenter``: images in, label maps out — a feature extractor plus a spectral estimator.

[`segment_image`][segment_image] is the one-photo shortcut: K regions of a single image at its full
resolution, from the per-image graph (feature kNN graph + pixel colour/position graph), as
in Deep Spectral Methods and scikit-learn's coins example.

``fit`` extracts token features from a *set* of images and fits one clustering across all of
them, so cluster ids mean the same thing in every image (semantic, not per-image, segments).
``predict`` extracts the features of (new) images, assigns their tokens to the fitted
clusters and brings the low-resolution token grid back to each image's full resolution:
per-token scores (the estimator's probabilities, or one-hot labels) are upsampled bilinearly
and the label is their argmax, which gives smooth borders instead of the blocky ones of
nearest-neighbour upsampling of labels. An optional dense CRF (Krähenbühl & Koltun, 2011)
refines the result with the image's colours.

One module per job, gathered here: ``segmenter`` holds [`Segmenter`][Segmenter],
``single_image`` holds [`segment_image`][segment_image]. The upsampling of token scores and
the dense CRF live in ``spectralnet_seg.postprocessing`` and are re-exported here.
"""

from __future__ import annotations

from ..postprocessing import CRF_DEFAULTS, dense_crf, upsample_scores
from ._inputs import _as_image_list as _as_image_list
from .segmenter import Segmenter
from .single_image import _image_kernel as _image_kernel
from .single_image import segment_image

__all__ = ["Segmenter", "segment_image", "upsample_scores", "dense_crf", "CRF_DEFAULTS"]
