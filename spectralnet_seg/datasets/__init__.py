"""Image/mask datasets: the bundled texture mosaics and loaders for standard layouts."""

from ._base import IGNORE_INDEX, SegmentationDataset, list_datasets, make_dataset, register_dataset
from .mosaics import TEXTURE_NAMES, TextureMosaics
from .transforms import ReCoProtocol, center_crop, reco_protocol, resize_short_side

__all__ = [
    "IGNORE_INDEX",
    "SegmentationDataset",
    "register_dataset",
    "make_dataset",
    "list_datasets",
    "TextureMosaics",
    "TEXTURE_NAMES",
    "reco_protocol",
    "ReCoProtocol",
    "resize_short_side",
    "center_crop",
]
