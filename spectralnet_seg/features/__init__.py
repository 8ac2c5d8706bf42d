"""Feature extractors: images in, dense token features plus colour/position context out.

* [`PixelExtractor`][PixelExtractor] -- training-free colour, position and texture features
(offline);
* [`TimmExtractor`][TimmExtractor] -- any ``timm`` backbone (ViT patch tokens or CNN feature maps);
* [`PrecomputedFeatures`][PrecomputedFeatures] -- arrays the user already has;
* [`make_extractor`][make_extractor] / [`list_extractors`][list_extractors] -- build them by name
  (``"pixel"``, ``"timm:vit_small_patch16_384"``, ``"precomputed"``).
"""

from ._base import ExtractedFeatures, FeatureExtractor, cell_means, resize_image, token_positions
from ._registry import list_extractors, make_extractor, register_extractor
from .pixel import ImageMemoryError, PixelExtractor, estimate_pixel_memory
from .precomputed import PrecomputedFeatures
from .timm_extractor import TimmExtractor

__all__ = [
    "ExtractedFeatures",
    "FeatureExtractor",
    "ImageMemoryError",
    "PixelExtractor",
    "PrecomputedFeatures",
    "TimmExtractor",
    "make_extractor",
    "list_extractors",
    "register_extractor",
    "token_positions",
    "cell_means",
    "resize_image",
    "estimate_pixel_memory",
]
