"""Post-processing of token scores: bilinear upsampling to full resolution and dense CRF.

The [`Segmenter`][spectralnet_seg.segmentation.Segmenter] predicts on a coarse token grid;
[`upsample_scores`][upsample_scores] brings per-token scores to the image's resolution (separable
bilinear interpolation, the same weights as ``torch.nn.functional.interpolate``) and
[`dense_crf`][dense_crf] optionally refines the labels with the image's colours (Krähenbühl &
Koltun, 2011; needs the ``crf`` extra).

>>> import numpy as np
>>> upsample_scores(np.eye(2)[None].repeat(2, axis=0), (4, 4)).shape
(4, 4)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CRF_DEFAULTS", "dense_crf", "upsample_scores"]

CRF_DEFAULTS: dict = {
    "n_iter": 10,
    "pos_xy_std": 1.0,
    "pos_weight": 3.0,
    "bi_xy_std": 67.0,
    "bi_rgb_std": 3.0,
    "bi_weight": 4.0,
}
"""Dense-CRF parameters of unsupervised segmentation work (STEGO, Deng & Luo 2023)."""

# Bound on the float32 score block upsampled at once (rows of the output are processed in
# strips), so K = 512 clusters on a large image do not need K x H x W floats at once.
_UPSAMPLE_BYTES = 64 * 2**20


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights with half-pixel centres.

    The 1-D factor of ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``: output pixel ``i`` samples input coordinate
    ``(i + 0.5) n_in / n_out - 0.5``, clamped to the border.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    M = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(M, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(M, (np.arange(n_out), hi), frac)
    return M


def upsample_scores(scores: np.ndarray, size: tuple[int, int], *, mode: str = "bilinear",
                    return_scores: bool = False):
    """Upsample a grid of per-token scores to ``size`` and take the argmax label.

    Parameters
    ----------
    scores : ndarray of shape (h, w, K)
        Scores (probabilities, one-hot labels, ...) of K labels on the token grid.
    size : (int, int)
        Output ``(H, W)``.
    mode : {"bilinear", "nearest"}, default="bilinear"
        Interpolation of the scores (``"nearest"`` copies each token's argmax label).
    return_scores : bool, default=False
        Also return the upsampled scores (H, W, K), float32.

    Returns
    -------
    labels : ndarray of shape (H, W), int64
    scores : ndarray of shape (H, W, K)
        Only when ``return_scores=True``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 3 or 0 in scores.shape:
        raise ValueError(f"scores must have shape (h, w, K) with no empty axis, got "
                         f"{scores.shape}")
    if not np.isfinite(scores).all():  # one NaN would spread over the whole image
        raise ValueError("scores hold NaN or inf; pass finite scores (e.g. probabilities "
                         "rather than log-probabilities with -inf).")
    h, w, K = scores.shape
    from .features._base import check_image_size

    H, W = check_image_size(size)
    if mode == "nearest":
        rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(int), h - 1)
        cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(int), w - 1)
        labels = scores.argmax(axis=2)[rows[:, None], cols[None, :]].astype(np.int64)
        if return_scores:
            return labels, scores[rows[:, None], cols[None, :]]
        return labels
    if mode != "bilinear":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    Ry = _interpolation_matrix(H, h)  # (H, h)
    Rx = _interpolation_matrix(W, w)  # (W, w)
    # Separable interpolation: first along x for the whole grid (h, W, K) ...
    along_x = np.einsum("Xw,hwk->hXk", Rx, scores, optimize=True)
    labels = np.empty((H, W), dtype=np.int64)
    out = np.empty((H, W, K), dtype=np.float32) if return_scores else None
    strip = max(1, _UPSAMPLE_BYTES // max(1, 4 * W * K))
    for top in range(0, H, strip):
        # ... then along y, one strip of output rows at a time.
        block = np.einsum("Yh,hXk->YXk", Ry[top:top + strip], along_x, optimize=True)
        labels[top:top + strip] = block.argmax(axis=2)
        if out is not None:
            out[top:top + strip] = block
    return (labels, out) if return_scores else labels


def _import_densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as exc:
        raise ImportError(
            "dense CRF post-processing needs the 'pydensecrf' module, which is not installed. "
            "Install the optional extra with `pip install spectralnet-seg[crf]` (it installs "
            "pydensecrf2, which imports as pydensecrf), or use crf=None."
        ) from exc
    return dcrf, unary_from_softmax


def dense_crf(image: np.ndarray, probabilities: np.ndarray, **params) -> np.ndarray:
    """Refine per-pixel label probabilities with a fully connected CRF.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), path or PIL image
        The image (its colours drive the bilateral term), read by
        ``spectralnet_seg.images.load_image`` (uint8 RGB; floats in [0, 1]).
    probabilities : ndarray of shape (H, W, K)
        Per-pixel label probabilities (rows need not be normalised exactly).
    **params
        Override [`CRF_DEFAULTS`][CRF_DEFAULTS]: ``n_iter``, ``pos_xy_std``, ``pos_weight``,
        ``bi_xy_std``, ``bi_rgb_std``, ``bi_weight``.

    Returns
    -------
    ndarray of shape (H, W), int64
        Labels after mean-field inference.
    """
    unknown = set(params) - set(CRF_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown CRF parameters {sorted(unknown)}; allowed: "
                         f"{sorted(CRF_DEFAULTS)}")
    p = {**CRF_DEFAULTS, **params}
    dcrf, unary_from_softmax = _import_densecrf()
    from .images import load_image

    image = load_image(image)  # uint8 RGB: a float image in [0, 1] is not cast to black
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 3 or probabilities.shape[:2] != image.shape[:2]:
        raise ValueError(f"probabilities must have shape (H, W, K) with the image's (H, W) "
                         f"{image.shape[:2]}, got {probabilities.shape}.")
    H, W, K = probabilities.shape
    prob = np.clip(probabilities.transpose(2, 0, 1), 1e-6, None)
    prob = prob / prob.sum(axis=0, keepdims=True)
    crf = dcrf.DenseCRF2D(W, H, K)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=p["pos_xy_std"], compat=p["pos_weight"])
    crf.addPairwiseBilateral(sxy=p["bi_xy_std"], srgb=p["bi_rgb_std"],
                             rgbim=np.ascontiguousarray(image, dtype=np.uint8),
                             compat=p["bi_weight"])
    q = np.asarray(crf.inference(int(p["n_iter"])), dtype=np.float32).reshape(K, H, W)
    return q.argmax(axis=0).astype(np.int64)
