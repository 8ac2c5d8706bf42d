"""Pictures: label overlays, eigenfunction heat maps and per-class IoU bar charts.

Figures are built with ``matplotlib.figure.Figure`` directly, never through
``pyplot``: nothing opens a window or touches the global pyplot state, and ``savefig`` renders
with the Agg canvas, so the functions work on headless machines and inside notebooks alike.

>>> import numpy as np
>>> from spectralnet_seg.plotting import label_overlay
>>> label_overlay(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=int)).shape
(8, 8, 3)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "label_colors",
    "colorize_labels",
    "label_overlay",
    "save_overlay",
    "save_label_map",
    "plot_segmentations",
    "plot_eigenfunctions",
    "plot_per_class_iou",
]


def label_colors(n_labels: int, *, seed: int = 0) -> np.ndarray:
    """A palette of ``n_labels`` distinct RGB colours.

    The first 20 come from matplotlib's ``tab20`` (reordered so neighbours contrast);
    further colours are drawn at random from a fixed ``seed``, so label ``j`` always gets
    the same colour.

    Parameters
    ----------
    n_labels : int
        Number of colours.
    seed : int, default=0
        Seed of the colours beyond the twentieth.

    Returns
    -------
    ndarray of shape (n_labels, 3), dtype uint8
    """
    from matplotlib import colormaps

    if n_labels < 0:
        raise ValueError(f"n_labels must be >= 0, got {n_labels}")
    tab = colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # strong colours first
    base = (np.asarray([tab[i] for i in order]) * 255).round().astype(np.uint8)
    if n_labels <= len(base):
        return base[:n_labels].copy()
    rng = np.random.default_rng(seed)
    extra = rng.integers(30, 256, size=(n_labels - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def _check_labels(labels, shape: tuple[int, int] | None = None, *, name: str = "labels"):
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a 2-D integer label map, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(f"{name} has shape {labels.shape} but the image is {tuple(shape)}; "
                         "label maps must be at the image's resolution.")
    return labels


def colorize_labels(labels, *, ignore_index: int | None = 255,
                    n_labels: int | None = None) -> np.ndarray:
    """Colour image of a label map; ``ignore_index`` pixels are black.

    Parameters
    ----------
    labels : ndarray of shape (H, W), integer
        Label map (non-negative labels, except ``ignore_index``).
    ignore_index : int or None, default=255
        Label drawn in black.
    n_labels : int, optional
        Palette size; defaults to ``max label + 1``.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
    """
    labels = _check_labels(labels)
    valid = labels != ignore_index if ignore_index is not None else np.ones_like(labels, bool)
    if (labels[valid] < 0).any():
        raise ValueError("labels must be non-negative (apart from ignore_index)")
    top = int(labels[valid].max()) + 1 if valid.any() else 0
    palette = label_colors(max(top, n_labels or 0))
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    out[valid] = palette[labels[valid]]
    return out


def label_overlay(image, labels, *, alpha: float = 0.5, boundaries: bool = True,
                  ignore_index: int | None = 255) -> np.ndarray:
    """Blend a label map over its image, optionally outlining the segments.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), path or PIL image
        The image (loaded with ``spectralnet_seg.images.load_image``).
    labels : ndarray of shape (H, W), integer
        Label map at the image's resolution.
    alpha : float, default=0.5
        Opacity of the label colours.
    boundaries : bool, default=True
        Draw segment boundaries in white (``skimage.segmentation.find_boundaries``).
    ignore_index : int or None, default=255
        Pixels with this label keep the plain image.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
    """
    from skimage.segmentation import find_boundaries

    from .images import _without_exif_warning, load_image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    with _without_exif_warning():  # drawn on the stored pixels, as the labels were made
        rgb = load_image(image).astype(np.float32)
    labels = _check_labels(labels, rgb.shape[:2])
    colors = colorize_labels(labels, ignore_index=ignore_index).astype(np.float32)
    blend = np.where((labels != ignore_index)[..., None] if ignore_index is not None else True,
                     (1 - alpha) * rgb + alpha * colors, rgb)
    if boundaries:
        blend[find_boundaries(labels, mode="inner")] = 255.0
    return blend.round().clip(0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image, labels, **kwargs) -> None:
    """Write [`label_overlay`][label_overlay] of ``image`` and ``labels`` to an image file (PNG).

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its parent directory must exist.
    image, labels
        As in [`label_overlay`][label_overlay].
    **kwargs
        Passed to [`label_overlay`][label_overlay].
    """
    from PIL import Image

    Image.fromarray(label_overlay(image, labels, **kwargs)).save(path)


def save_label_map(path: str | os.PathLike, labels, *, palette: bool = False) -> None:
    """Write a label map to a PNG file, as raw ids or as a palette image one can look at.

    Raw ids (``palette=False``) are exact but look black in an image viewer (ids 0-7 out of
    255); a palette PNG stores the same ids as indices into [`label_colors`][label_colors], so it
    opens as a colour picture and still reads back as ids
    (``np.asarray(PIL.Image.open(path))``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (PNG); its parent directory must exist.
    labels : ndarray of shape (H, W), integer
        Non-negative label map.
    palette : bool, default=False
        Write an 8-bit palette PNG instead of grey ids. Label maps with ids of 256 or more
        do not fit a palette and are written as an RGB colour image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> labels = np.array([[0, 1], [2, 3]])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.png"
    >>> save_label_map(path, labels, palette=True)
    >>> with Image.open(path) as image:
    ...     image.mode, np.asarray(image).tolist()
    ('P', [[0, 1], [2, 3]])
    """
    from PIL import Image

    labels = _check_labels(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative to be written as a PNG")
    top = int(labels.max()) if labels.size else 0
    if not palette:
        dtype = np.uint8 if top < 256 else np.uint16
        if top >= 2**16:
            raise ValueError(f"label ids up to {top} do not fit a 16-bit PNG")
        Image.fromarray(labels.astype(dtype)).save(path)
        return
    if top >= 256:
        Image.fromarray(colorize_labels(labels, ignore_index=None)).save(path)
        return
    image = Image.fromarray(labels.astype(np.uint8))  # grey ("L"); a palette makes it "P"
    image.putpalette(label_colors(256).ravel().tolist())
    image.save(path)


def _new_figure(n_rows: int, n_cols: int, *, panel: float = 2.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * n_cols, panel * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes


def plot_segmentations(images: Sequence, predictions: Mapping[str, Sequence] | Sequence, *,
                       ground_truth: Sequence | None = None, max_images: int = 6,
                       alpha: float = 0.55, ignore_index: int | None = None):
    """Grid of images (rows) with the overlays of one or several methods (columns).

    Parameters
    ----------
    images : sequence of ndarray of shape (H_i, W_i, 3)
        The images.
    predictions : mapping of str to sequence of label maps, or a sequence of label maps
        Label maps of shape (H_i, W_i) per method (a plain sequence is one method,
        ``"prediction"``).
    ground_truth : sequence of label maps, optional
        Shown coloured (not blended) in the last column; 255 is ignore (black).
    max_images : int, default=6
        Rows shown at most.
    alpha : float, default=0.55
        Opacity of the overlays.
    ignore_index : int, optional
        Label of the predictions left without overlay; None (the default) for cluster ids,
        where 255 is a cluster like any other (the paper's K = 256); 255 for predictions
        mapped to classes by [`apply_mapping`][spectralnet_seg.metrics.apply_mapping].

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(predictions, Mapping):
        predictions = {"prediction": predictions}
    n = min(len(images), max_images)
    if n == 0:
        raise ValueError("no images to plot")
    for name, maps in predictions.items():
        if len(maps) < n:
            raise ValueError(f"predictions[{name!r}] has {len(maps)} label maps for {n} images")
    if ground_truth is not None and len(ground_truth) < n:
        raise ValueError(f"ground_truth has {len(ground_truth)} masks for {n} images")
    n_cols = 1 + len(predictions) + (ground_truth is not None)
    fig, axes = _new_figure(n, n_cols)
    for i in range(n):
        axes[i, 0].imshow(images[i])
        for j, (name, maps) in enumerate(predictions.items(), start=1):
            axes[i, j].imshow(label_overlay(images[i], maps[i], alpha=alpha,
                                            ignore_index=ignore_index))
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        if ground_truth is not None:
            axes[i, -1].imshow(colorize_labels(np.asarray(ground_truth[i])))
            if i == 0:
                axes[i, -1].set_title("ground truth", fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    return fig


def plot_eigenfunctions(image, eigenmaps, *, n_show: int = 6, cmap: str = "RdBu_r",
                        titles: Sequence[str] | None = None):
    """Heat maps of the first ``n_show`` eigenfunctions ψ_j over one image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3)
        The image (first panel).
    eigenmaps : ndarray of shape (h, w, K)
        Eigenfunction values per token (e.g. ``Segmenter.transform(...)[i]``); shown at
        their own grid resolution, stretched to the image's extent.
    n_show : int, default=6
        How many eigenfunctions to show (the first ones).
    cmap : str, default="RdBu_r"
        Diverging colour map, centred at 0 per panel.
    titles : sequence of str, optional
        Panel titles; default ``ψ_1 … ψ_n``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .images import load_image

    rgb = load_image(image)
    maps = np.asarray(eigenmaps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"eigenmaps must have shape (h, w, K), got {maps.shape}")
    if n_show < 1:
        raise ValueError(f"n_show must be >= 1, got {n_show}")
    n_show = min(n_show, maps.shape[2])
    if titles is not None and len(titles) < n_show:
        raise ValueError(f"titles has {len(titles)} entries for {n_show} panels")
    n_cols = min(n_show + 1, 4)
    n_rows = int(np.ceil((n_show + 1) / n_cols))
    fig, axes = _new_figure(n_rows, n_cols)
    flat = axes.ravel()
    flat[0].imshow(rgb)
    flat[0].set_title("image", fontsize=9)
    extent = (0, rgb.shape[1], rgb.shape[0], 0)
    for j in range(n_show):
        values = maps[..., j]
        bound = float(np.abs(values).max()) or 1.0
        im = flat[j + 1].imshow(values, cmap=cmap, vmin=-bound, vmax=bound, extent=extent,
                                interpolation="nearest")
        flat[j + 1].set_title(titles[j] if titles else f"ψ_{j + 1}", fontsize=9)
        fig.colorbar(im, ax=flat[j + 1], shrink=0.7)
    return fig


def plot_per_class_iou(per_class_iou, class_names: Sequence[str] | None = None, *,
                       title: str | None = None):
    """Horizontal bar chart of the IoU of each class, with the mean as a dashed line.

    Parameters
    ----------
    per_class_iou : array-like of shape (n_classes,)
        IoU per class in [0, 1]; NaN (class absent) is drawn as a missing bar.
    class_names : sequence of str, optional
        Class names; default ``class 0 …``.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    iou = np.asarray(per_class_iou, dtype=float).ravel()
    if iou.size == 0:
        raise ValueError("per_class_iou is empty")
    if class_names is None:
        class_names = [f"class {i}" for i in range(iou.size)]
    if len(class_names) != iou.size:
        raise ValueError(f"{len(class_names)} class names for {iou.size} IoU values")
    fig = Figure(figsize=(6, 0.3 * iou.size + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(iou.size)
    ax.barh(y, np.nan_to_num(iou) * 100, color=label_colors(iou.size) / 255.0)
    ax.set_yticks(y, labels=list(class_names))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    if np.isfinite(iou).any():
        mean = float(np.nanmean(iou)) * 100
        ax.axvline(mean, color="k", linestyle="--", linewidth=1, label=f"mIoU {mean:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig
