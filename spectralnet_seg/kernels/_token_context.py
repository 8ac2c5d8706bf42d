"""Per-token side information for the pixel graph: colour, position and image of each token.

Tokens of a feature grid carry more than their feature vector: the colour of the image
region they cover and their position in the image. [`TokenContext`][TokenContext] holds that side
information (built from an ``ExtractedFeatures`` with
[`TokenContext.from_features`][TokenContext.from_features]), and
[`as_token_context`][as_token_context] is how kernels that need it
(``SpatialColorKernel``) accept and check the ``context`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TokenContext", "as_token_context"]


# Rounding allowance on the [0, 1] range of colours and positions (float32 resampling).
_RANGE_SLACK = 1e-4


@dataclass(frozen=True)
class TokenContext:
    """Per-token side information: colour, position and the image each token comes from.

    Parameters
    ----------
    colors : ndarray of shape (n_tokens, 3)
        Mean RGB colour of the region a token covers, in [0, 1].
    positions : ndarray of shape (n_tokens, 2)
        Token centre ``(y, x)``, normalised to [0, 1] by the image height and width (the
        scale the λ weights of [`SpatialColorKernel`][SpatialColorKernel] assume).
    image_ids : ndarray of shape (n_tokens,)
        Integer id of the image of each token; tokens of different images never connect.

    Examples
    --------
    >>> import numpy as np
    >>> ctx = TokenContext(np.zeros((4, 3)), np.zeros((4, 2)), np.array([0, 0, 1, 1]))
    >>> len(ctx), len(ctx[np.array([1, 2])])
    (4, 2)
    """

    colors: np.ndarray
    positions: np.ndarray
    image_ids: np.ndarray

    def __post_init__(self) -> None:
        colors = np.asarray(self.colors, dtype=np.float32)
        positions = np.asarray(self.positions, dtype=np.float32)
        image_ids = np.asarray(self.image_ids)
        if colors.ndim != 2 or colors.shape[1] != 3:
            raise ValueError(f"TokenContext.colors must have shape (n_tokens, 3), got {colors.shape}")
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(
                f"TokenContext.positions must have shape (n_tokens, 2), got {positions.shape}"
            )
        if image_ids.ndim != 1 or not np.issubdtype(image_ids.dtype, np.integer):
            raise ValueError(
                "TokenContext.image_ids must be a 1-D integer array, got shape "
                f"{image_ids.shape} and dtype {image_ids.dtype}"
            )
        if not (len(colors) == len(positions) == len(image_ids)):
            raise ValueError(
                "TokenContext arrays must have the same length, got colors "
                f"{len(colors)}, positions {len(positions)}, image_ids {len(image_ids)}"
            )
        if not (np.isfinite(colors).all() and np.isfinite(positions).all()):
            raise ValueError("TokenContext.colors and positions must be finite (no NaN/inf)")
        # The λ weights of the pixel graph assume these scales: 0..255 colours or pixel
        # coordinates would silently make colour or position dominate every affinity.
        for name, values, fix in (("colors", colors, "divide 8-bit colours by 255"),
                                  ("positions", positions, "divide (y, x) by the image's "
                                   "height and width")):
            if values.size and (values.min() < -_RANGE_SLACK or values.max() > 1 + _RANGE_SLACK):
                raise ValueError(f"TokenContext.{name} must lie in [0, 1], got values in "
                                 f"[{values.min():.4g}, {values.max():.4g}]; {fix}.")
        # frozen dataclass: write the converted arrays through object.__setattr__
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "image_ids", image_ids.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index) -> TokenContext:
        """The context of a subset of tokens (index array, boolean mask, slice or tensor)."""
        if hasattr(index, "detach"):  # torch tensor of indices from a minibatch sampler
            index = index.detach().cpu().numpy()
        return TokenContext(self.colors[index], self.positions[index], self.image_ids[index])

    @classmethod
    def from_features(cls, extracted: Any, *, image_id_offset: int = 0) -> TokenContext:
        """Build the context of an
        [`ExtractedFeatures`][spectralnet_seg.features.ExtractedFeatures].

        Parameters
        ----------
        extracted : ExtractedFeatures
            With ``colors`` of shape (n_images, h, w, 3) and ``positions`` of shape
            (n_images, h, w, 2); tokens are taken in the row-major order of
            ``extracted.flatten()``.
        image_id_offset : int, default=0
            Added to the image ids (to keep ids unique across several extractions).

        Returns
        -------
        TokenContext
        """
        colors = getattr(extracted, "colors", None)
        positions = getattr(extracted, "positions", None)
        if colors is None or positions is None:
            raise TypeError(
                "TokenContext.from_features needs an object with 'colors' and 'positions' "
                f"arrays (an ExtractedFeatures), got {type(extracted).__name__}"
            )
        colors = np.asarray(colors, dtype=np.float32)
        positions = np.asarray(positions, dtype=np.float32)
        if colors.ndim != 4 or positions.ndim != 4:
            raise ValueError(
                "expected colors (n_images, h, w, 3) and positions (n_images, h, w, 2), got "
                f"shapes {colors.shape} and {positions.shape}"
            )
        n_images, h, w = colors.shape[:3]
        image_ids = np.repeat(np.arange(n_images, dtype=np.int64) + image_id_offset, h * w)
        return cls(colors.reshape(-1, 3), positions.reshape(-1, 2), image_ids)


def as_token_context(context: Any, n_tokens: int, *, owner: str) -> TokenContext:
    """Coerce ``context`` to a [`TokenContext`][TokenContext] of ``n_tokens`` tokens, or explain why
    not.

    Accepts a [`TokenContext`][TokenContext] or an ``ExtractedFeatures`` (converted with
    [`TokenContext.from_features`][TokenContext.from_features]).
    """
    if context is None:
        raise ValueError(
            f"{owner} needs the token context (colour, position and image id of every token), "
            "but context=None was passed. Build it with "
            "TokenContext.from_features(extracted) and pass it to the estimator's fit, or "
            "use Segmenter, which does this for you; for plain feature vectors use a "
            "feature-only kernel such as 'knn'."
        )
    if not isinstance(context, TokenContext):
        if hasattr(context, "colors") and hasattr(context, "positions"):
            context = TokenContext.from_features(context)
        else:
            raise TypeError(
                f"{owner} expects a TokenContext (or ExtractedFeatures) as context, got "
                f"{type(context).__name__}"
            )
    if len(context) != n_tokens:
        raise ValueError(
            f"{owner}: the context describes {len(context)} tokens but X has {n_tokens} rows; "
            "pass the context of exactly these tokens, in the same order."
        )
    return context
