"""spectralnet_seg: spectral clustering at dataset scale for unsupervised semantic segmentation."""

__version__ = "0.1.0"
