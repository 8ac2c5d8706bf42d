"""Shared configuration of the texture-mosaic task: data, features and kernel, nothing tuned.

The demo (``spectralnet-seg demo``), the quality benchmark and the example script all segment
the bundled texture mosaics; this module is the one place that says how — the mosaics, the
[`PixelExtractor`][spectralnet_seg.features.PixelExtractor] features and the affinity the spectral
methods share. Estimator settings are *not* part of it: a field left at ``None`` means "the
estimator's own default", so every caller runs the estimators as a new user would.

>>> config = MosaicConfig.quick()
>>> config.neural_params(), type(config.build_kernel()).__name__
({'max_iter': 100}, 'SumKernel')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MOSAIC_KERNELS", "MosaicConfig", "mosaic_kernel"]

MOSAIC_KERNELS = ("paper", "knn")
"""Affinities of the mosaic task: the paper's feature + pixel graph, or the feature graph."""


@dataclass
class MosaicConfig:
    """Data, features and kernel of the mosaic task; the estimators keep their own defaults.

    Only what defines the task is set here — the mosaics, the features and the affinity
    the three spectral methods share. Every estimator is built with its defaults (and
    ``random_state``), as a new user would: nothing is tuned against the mosaics' labels.

    Attributes
    ----------
    n_train, n_test : int
        Training mosaics (fit) and held-out mosaics (evaluation, out-of-sample predict).
    image_size : int
        Side of the square mosaics in pixels.
    stride : int
        Cell side of the [`PixelExtractor`][spectralnet_seg.features.PixelExtractor] grid.
    texture_window : float
        Gaussian window (pixels) of the extractor's texture statistics: half a cell, so each
        token describes its own cell rather than a blur of its neighbours.
    n_clusters : int
        Clusters K of every method, more than the 6 texture classes (matched to them
        many-to-one, as the paper does with K = 256 on Pascal Context).
    kernel : {"paper", "knn"}
        Affinity shared by the spectral methods: the paper's feature + pixel graph (needs
        the token context, passed by the Segmenter) or the cosine kNN feature graph alone.
    n_neighbors : int
        Neighbours of the cosine kNN feature graph (the paper's 256 are meant for
        thousands of tokens per image; a mosaic has 144).
    pixel_weight : float
        α, the weight of the normalised pixel graph in the ``"paper"`` kernel: 1, the
        feature and the spatial graph on an equal footing (the paper uses 0.3 on ViT
        features, whose patches already carry context).
    max_iter : int or None
        Cap on the neural estimators' training steps; None keeps their default (only the
        smoke-test configuration [`quick`][quick] caps it).
    random_state : int
        Seed of the estimators (the mosaics use seeds 0 and 1 for the two splits).
    """

    n_train: int = 8
    n_test: int = 8
    image_size: int = 96
    stride: int = 8
    texture_window: float = 4.0
    n_clusters: int = 12
    kernel: str = "paper"
    n_neighbors: int = 16
    pixel_weight: float = 1.0
    max_iter: int | None = None
    random_state: int = 0

    @classmethod
    def quick(cls) -> MosaicConfig:
        """A small run for smoke tests (seconds, not minutes)."""
        return cls(n_train=4, n_test=2, image_size=48, n_neighbors=16, max_iter=100)

    def neural_params(self) -> dict:
        """What the neural estimators get besides the kernel: nothing but the step cap."""
        return {} if self.max_iter is None else {"max_iter": self.max_iter}

    def build_kernel(self):
        """The kernel the spectral methods share ([`mosaic_kernel`][mosaic_kernel] with these
        settings)."""
        return mosaic_kernel(self.n_neighbors, kind=self.kernel, pixel_weight=self.pixel_weight)

    def build_extractor(self):
        """The [`PixelExtractor`][spectralnet_seg.features.PixelExtractor] of the task's token
        features."""
        from .features import PixelExtractor

        return PixelExtractor(stride=self.stride, texture_window=self.texture_window)


def mosaic_kernel(n_neighbors: int = 32, *, kind: str = "paper", pixel_weight: float = 0.3):
    """The kernel shared by eigsh and the neural estimators.

    Parameters
    ----------
    n_neighbors : int, default=32
        Neighbours per token of the cosine kNN feature graph.
    kind : {"paper", "knn"}, default="paper"
        ``"paper"``: [`paper_kernel`][spectralnet_seg.kernels.paper_kernel], the normalised feature
        graph plus ``pixel_weight`` times the normalised per-image pixel graph (needs the
        token context); ``"knn"``: the feature graph alone.
    pixel_weight : float, default=0.3
        α of the ``"paper"`` kernel.

    Returns
    -------
    Kernel
        A ``SumKernel`` (``"paper"``) or a ``KNNKernel`` (``"knn"``).

    Examples
    --------
    >>> type(mosaic_kernel(16, kind="knn")).__name__
    'KNNKernel'
    """
    from .kernels import KNNKernel, paper_kernel

    if kind not in MOSAIC_KERNELS:
        raise ValueError(f"unknown kernel {kind!r}; choose one of {', '.join(MOSAIC_KERNELS)}")
    if kind == "paper":
        return paper_kernel(n_neighbors=n_neighbors, pixel_weight=pixel_weight)
    return KNNKernel(n_neighbors=n_neighbors, metric="cosine", weighting="cosine")
