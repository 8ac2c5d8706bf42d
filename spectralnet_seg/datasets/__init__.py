"""Image/mask datasets: the bundled texture mosaics and loaders for standard layouts.

>>> from spectralnet_seg.datasets import list_datasets
>>> list_datasets("c*")
['cityscapes27', 'cocostuff27']
"""

from ._base import IGNORE_INDEX, SegmentationDataset, list_datasets, make_dataset, register_dataset
from .mosaics import TEXTURE_NAMES, TextureMosaics
from .standard import ADE20K, Cityscapes27, CocoStuff27, FolderDataset, PascalContext
from .transforms import ReCoProtocol, center_crop, reco_protocol, resize_short_side

__all__ = [
    "IGNORE_INDEX",
    "SegmentationDataset",
    "register_dataset",
    "make_dataset",
    "list_datasets",
    "TextureMosaics",
    "TEXTURE_NAMES",
    "FolderDataset",
    "PascalContext",
    "Cityscapes27",
    "ADE20K",
    "CocoStuff27",
    "reco_protocol",
    "ReCoProtocol",
    "resize_short_side",
    "center_crop",
]
