"""Dense features from any ``timm`` backbone: ViT patch tokens or CNN feature maps.

Vision transformers are built with ``dynamic_img_size=True`` (position embeddings are
resampled to each input size), their class/register tokens (``model.num_prefix_tokens``) are
dropped and the patch tokens are reshaped to the patch grid. Several blocks can be
concatenated (the spectral segmentation paper uses blocks 0, L/2 and the last:
``layers="paper"``), and the last selected block can contribute its attention *keys*
instead of its output tokens (``facet="key"``, as DINO-based work does). Other models are
built with ``features_only=True`` and give their stage maps.

Where the weights come from is configuration, in timm's terms: ``pretrained=True`` loads the
model's default pretrained weights (from the Hugging Face hub, cached locally);
``checkpoint_path`` loads a local timm-format state dict strictly;
``pretrained_cfg_overlay=dict(file=path)`` (with ``pretrained=True``) loads a local file
through the model's checkpoint filter, which converts original DINO / DINOv2 checkpoints and
resamples position embeddings.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from .._utils import is_integer, loaded_model_device, progress, resolve_device
from ..images import load_images
from ._base import (
    ExtractedFeatures,
    FeatureExtractor,
    cell_means,
    check_input_size,
    resize_image,
    token_positions,
)
from ._registry import register_extractor
from .pixel import common_size

__all__ = ["TimmExtractor"]


def _check_file(path, what: str) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist (or is not a file); "
                                "pass the path of a local weights file.")


def _is_unexpected_keyword(err: TypeError, name: str) -> bool:
    """Whether ``err`` says that a constructor does not take the keyword ``name``."""
    return "unexpected keyword" in str(err) and repr(name) in str(err)


def _run_model(extractor: TimmExtractor, config: dict, batch: np.ndarray) -> np.ndarray:
    """Backbone features ``(b, h, w, d)`` of a preprocessed batch ``(b, 3, H, W)``.

    A free function so that ``joblib.Memory`` can cache it: ``config`` (everything the
    output depends on) and ``batch`` form the cache key, ``extractor`` is ignored.
    """
    return extractor._forward(batch)


@register_extractor("timm", argument="model_name")
class TimmExtractor(FeatureExtractor):
    """Token features of a ``timm`` model.

    Parameters
    ----------
    model_name : str
        Any ``timm.list_models`` name, with an optional pretrained tag
        (``"vit_small_patch16_384"``, ``"vit_small_patch8_224.dino"``, ``"resnet50"``).
    pretrained : bool, default=True
        Load the model's pretrained weights (hub download on first use, or the local file
        given in ``pretrained_cfg_overlay``). ``False`` keeps a random initialisation.
        Ignored when ``checkpoint_path`` is given.
    checkpoint_path : str or os.PathLike, optional
        Local timm-format state dict, loaded strictly after the model is built. It replaces
        the hub weights, so nothing is downloaded whatever ``pretrained`` says.
    pretrained_cfg_overlay : dict, optional
        Overrides of the pretrained config, e.g. ``dict(file="dino_deitsmall8_pretrain.pth")``
        to load an original checkpoint through timm's filter (needs ``pretrained=True``).
    layers : int, sequence of int, "paper" or None, default=None
        ViTs: block indices whose patch tokens are concatenated along the channels, in
        block order and each once (negative counts from the end); ``"paper"`` is
        ``[0, L // 2, L - 1]``; ``None`` is the final output of ``forward_features``
        (normed, except for models that norm only after pooling, ``global_pool="avg"``).
        CNNs (and Swin-like models): indices into the feature maps that timm's
        ``features_only`` model returns (default: the last one), in stage order; coarser
        maps are bilinearly resized to the finest selected grid, and the input is cut to a
        multiple of the coarsest selected stride so that every map covers the same pixels.
        Those maps are timm's ``out_indices``: every stage for most CNNs, but e.g. only the
        last 3 blocks of BEiT-like transformers and stages 1-5 of DLA (choose others with
        ``model_kwargs=dict(out_indices=...)``).
    layer_norm : bool, default=True
        Apply the ViT's final LayerNorm to intermediate blocks too (puts the blocks on one
        scale before concatenation). ViTs read through their blocks only: the maps of a
        ``features_only`` model (CNNs, Swin, BEiT-like ViTs) are returned as timm gives them.
    facet : {"token", "key"}, default="token"
        ``"key"``: the deepest selected ViT block (the last block when ``layers=None``)
        gives its attention keys (before any key normalisation) instead of its output
        tokens. Attention whose keys bypass the ``qkv`` projection (EVA, DINOv3) is refused,
        and so are models read through ``features_only`` (CNNs, Swin, BEiT-like ViTs).
    image_size : int, (int, int) or None, default=None
        Input size every image is resized to. ``None``: the first image's size of each call,
        rounded down to a multiple of the patch size / network stride.
    batch_size : int, default=8
        Images per forward pass.
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available.
    memory : str, os.PathLike or joblib.Memory, optional
        Cache of the backbone outputs (keyed by the images and every parameter above).
    model_kwargs : dict, optional
        Extra keyword arguments of ``timm.create_model`` (e.g. ``img_size``, ``depth``).
    verbose : bool, default=False
        Show a progress bar over batches.

    Attributes
    ----------
    model_ : torch.nn.Module
        The backbone, in eval mode, on ``device_``.
    kind_ : {"vit", "cnn"}
        How features are read out.
    data_config_ : dict
        timm's preprocessing config (``mean``, ``std``, ``interpolation``, ...).
    device_ : torch.device
    stride_ : int
        Pixels per token (patch size or network stride of the finest selected map).
    size_multiple_ : int
        The input's height and width are cut to a multiple of it: ``stride_`` for ViTs, the
        coarsest selected map's stride for CNNs.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.features import TimmExtractor
    >>> ex = TimmExtractor("vit_tiny_patch16_224", pretrained=False, layers="paper",
    ...                    model_kwargs=dict(depth=3, embed_dim=32, num_heads=2))
    >>> out = ex.extract(np.zeros((2, 48, 64, 3), np.uint8))
    >>> out.features.shape
    (2, 3, 4, 96)
    """

    _parameter_constraints: dict = {
        "model_name": [str],
        "pretrained": ["boolean"],
        "checkpoint_path": [None, str, os.PathLike],
        "pretrained_cfg_overlay": [None, dict],
        "layers": [None, Integral, list, tuple, StrOptions({"paper"})],
        "layer_norm": ["boolean"],
        "facet": [StrOptions({"token", "key"})],
        "image_size": [None, Interval(Integral, 1, None, closed="left"), tuple, list],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",  # checked by resolve_device
        "memory": "no_validation",  # None, a folder or a joblib.Memory
        "model_kwargs": [None, dict],
        "verbose": ["boolean", "verbose"],
    }

    def __init__(self, model_name: str, *, pretrained: bool = True, checkpoint_path=None,
                 pretrained_cfg_overlay: dict | None = None, layers=None,
                 layer_norm: bool = True, facet: str = "token", image_size=None,
                 batch_size: int = 8, device="auto", memory=None,
                 model_kwargs: dict | None = None, verbose: bool = False):
        self.model_name = model_name
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.pretrained_cfg_overlay = pretrained_cfg_overlay
        self.layers = layers
        self.layer_norm = layer_norm
        self.facet = facet
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.memory = memory
        self.model_kwargs = model_kwargs
        self.verbose = verbose

    # ------------------------------------------------------------------ model
    def _build_key(self) -> tuple:
        return (self.model_name, self.pretrained, str(self.checkpoint_path),
                repr(self.pretrained_cfg_overlay), repr(self.model_kwargs), str(self.device))

    def __getstate__(self):
        # The backbone is pickled on the CPU: a model saved from a GPU run must load on a
        # machine without CUDA (torch cannot unpickle CUDA tensors there).
        state = super().__getstate__()
        model = state.get("model_")
        if model is not None and any(t.device.type != "cpu"
                                     for t in (*model.parameters(), *model.buffers())):
            state["model_"] = copy.deepcopy(model).cpu()
        return state

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        if "model_" in self.__dict__:  # fitted: the backbone goes to this machine's device
            self.device_ = loaded_model_device(self.device, type(self).__name__)
            self.model_ = self.model_.to(self.device_)

    def _build(self) -> None:
        """Create the backbone (once per set of model parameters)."""
        if getattr(self, "_built_key", None) == self._build_key():
            return
        import timm

        if not timm.is_model(self.model_name):
            raise ValueError(
                f"unknown timm model {self.model_name!r}; list candidates with "
                "spectralnet_seg.features.list_extractors('timm:*vit_small*') or "
                "timm.list_models('*pattern*').")
        _check_file(self.checkpoint_path, "checkpoint_path")
        overlay = dict(self.pretrained_cfg_overlay or {})
        _check_file(overlay.get("file"), "pretrained_cfg_overlay['file']")
        # timm would fetch the hub weights first and then overwrite them with the local
        # file: a local file means no download (and no failure offline).
        from_hub = self.pretrained and self.checkpoint_path is None
        common = dict(pretrained=from_hub, pretrained_cfg_overlay=overlay or None,
                      checkpoint_path=(None if self.checkpoint_path is None
                                       else os.fspath(self.checkpoint_path)),
                      **(self.model_kwargs or {}))
        model, kind = None, "cnn"
        try:
            try:
                model = timm.create_model(self.model_name,
                                          **{"dynamic_img_size": True, **common})
                kind = "vit" if self._is_token_model(model) else "cnn"
            except TypeError as err:  # the architecture has no dynamic_img_size: not a ViT
                if not _is_unexpected_keyword(err, "dynamic_img_size"):
                    raise
            if kind == "cnn":
                model = self._create_feature_model(timm, common)
        except OSError as err:  # hub download failed: offline, or not in the local cache
            if not from_hub or "file" in overlay:
                raise
            raise OSError(
                f"could not get the pretrained weights of {self.model_name!r} ({err}). Without "
                "network access, pass a local file: checkpoint_path=... (timm format) or "
                "pretrained=True, pretrained_cfg_overlay=dict(file=...) (original checkpoint), "
                "or pretrained=False for random weights.") from err
        self.device_ = resolve_device(self.device)
        self.model_ = model.eval().to(self.device_)
        self.kind_ = kind
        self.data_config_ = timm.data.resolve_model_data_config(model)
        self._built_key = self._build_key()

    def _create_feature_model(self, timm, common: dict):
        """The ``features_only`` model; token models with a fixed input size (Swin) are
        built with ``strict_img_size=False`` so that they take any image size, as ViTs do."""
        try:
            return timm.create_model(self.model_name, features_only=True,
                                     **{"strict_img_size": False, **common})
        except TypeError as err:  # CNNs have no such argument
            if not _is_unexpected_keyword(err, "strict_img_size"):
                raise
        return timm.create_model(self.model_name, features_only=True, **common)

    def _resolve_layers(self) -> None:
        """Set ``layer_indices_`` and ``stride_`` from ``layers`` (may change after a build)."""
        model = self.model_
        if self.kind_ == "cnn" and self.facet == "key":
            raise ValueError(
                f"facet='key' reads the attention keys of a ViT block, but {self.model_name} "
                "is read through timm's features_only maps, which have none; use "
                "facet='token'.")
        # features_only models return the maps of feature_info.out_indices only (reduction()
        # lists those), not one per entry of feature_info: len(feature_info) picked wrong
        # maps (BEiT's layers=0 was block 3) or failed with an IndexError.
        n_layers = (len(model.blocks) if self.kind_ == "vit"
                    else len(model.feature_info.reduction()))
        self.layer_indices_ = self._layer_indices(n_layers)
        if self.kind_ == "vit":
            # feat_ratio, not patch_size: a hybrid ViT's patch_size is 1 on its CNN's map.
            ratio = (model.patch_embed.feat_ratio() if hasattr(model.patch_embed, "feat_ratio")
                     else model.patch_embed.patch_size)
            self.stride_ = self.size_multiple_ = int(np.max(ratio))
        else:
            reductions = [model.feature_info.reduction()[i] for i in self.layer_indices_]
            self.stride_ = int(min(reductions))
            # A coarse map of an input that is not a multiple of its stride covers more
            # pixels than the input (padding): stretched onto the finest grid, its cells
            # described places up to a coarse cell away from the fine cells beside them.
            self.size_multiple_ = int(max(reductions))

    @staticmethod
    def _is_token_model(model) -> bool:
        return all(hasattr(model, a) for a in
                   ("num_prefix_tokens", "forward_intermediates", "patch_embed", "blocks"))

    def _layer_indices(self, n_layers: int) -> list[int] | None:
        layers = self.layers
        if layers is None:
            return None if self.kind_ == "vit" else [n_layers - 1]
        if isinstance(layers, str):  # "paper"
            return sorted({0, n_layers // 2, n_layers - 1})
        layers = [layers] if isinstance(layers, Integral) else list(layers)
        if not layers or not all(is_integer(i) for i in layers):
            raise ValueError(f"layers must be None, 'paper', an int or a list of ints; got "
                             f"{self.layers!r}")
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad:
            unit = "blocks" if self.kind_ == "vit" else "feature stages"
            raise ValueError(f"layers {bad} are out of range: {self.model_name} has {n_layers} "
                             f"{unit} (valid indices -{n_layers}..{n_layers - 1})")
        # Block order, each once: timm returns intermediates in block order whatever the
        # order asked for, and the key facet reads the deepest selected block.
        return sorted({int(i) % n_layers for i in layers})

    # ------------------------------------------------------------------ forward
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the backbone on a normalised batch ``(b, 3, H, W)`` -> ``(b, h, w, d)``."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(batch).to(self.device_)
        with torch.inference_mode():
            maps = self._vit_maps(x) if self.kind_ == "vit" else self._cnn_maps(x)
            h = max(m.shape[-2] for m in maps)
            w = max(m.shape[-1] for m in maps)
            maps = [m if m.shape[-2:] == (h, w) else
                    F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
                    for m in maps]
            out = torch.cat(maps, dim=1).permute(0, 2, 3, 1)  # (b, h, w, d)
        return out.float().cpu().numpy()

    def _vit_maps(self, x):
        """ViT token maps ``[(b, c, h, w), ...]`` of the selected blocks, prefix dropped."""
        from torch import nn

        model = self.model_
        b, _, height, width = x.shape
        h, w = model.patch_embed.dynamic_feat_size((height, width))
        prefix = model.num_prefix_tokens
        indices = self.layer_indices_
        keys, handle = {}, None
        if self.facet == "key":
            key_block = indices[-1] if indices is not None else len(model.blocks) - 1
            attn = model.blocks[key_block].attn
            if not isinstance(getattr(attn, "qkv", None), nn.Module) or any(
                    getattr(attn, name, None) is not None for name in ("q_bias", "k_bias")):
                raise ValueError(
                    f"facet='key' is not supported for {type(attn).__name__} ({self.model_name}): "
                    "its keys do not come from one fused qkv projection; use facet='token'.")

            def grab_keys(module, inputs, output):  # qkv: (b, n, 3 * c) -> keys (b, n, c)
                keys["k"] = output.reshape(b, output.shape[1], 3, -1)[:, :, 1]

            handle = model.blocks[key_block].attn.qkv.register_forward_hook(grab_keys)
        try:
            if indices is None:
                tokens = model.forward_features(x)[:, prefix:]  # (b, h*w, c), normed
                maps = [tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2)]
            else:
                maps = model.forward_intermediates(x, indices=indices, norm=self.layer_norm,
                                                   output_fmt="NCHW", intermediates_only=True)
        finally:
            if handle is not None:
                handle.remove()
        if self.facet == "key":
            if "k" not in keys:  # the attention computed its keys without calling attn.qkv
                raise ValueError(f"facet='key' is not supported for {type(attn).__name__} "
                                 f"({self.model_name}); use facet='token'.")
            key_map = keys["k"][:, prefix:].reshape(b, h, w, -1).permute(0, 3, 1, 2)
            maps = [*maps[:-1], key_map]
        return list(maps)

    def _cnn_maps(self, x):
        """CNN stage maps ``[(b, c, h, w), ...]`` of the selected stages."""
        maps = self.model_(x)
        fmt = getattr(self.model_, "output_fmt", "NCHW")
        if getattr(fmt, "value", fmt) == "NHWC":  # Swin and other token models
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        return [maps[i] for i in self.layer_indices_]

    # ------------------------------------------------------------------ extract
    def _input_size(self, images: list[np.ndarray], size=None) -> tuple[int, int]:
        check_input_size(self.image_size, name="image_size")
        check_input_size(size, name="size")
        height, width = common_size(images, self.image_size, size)
        s = self.size_multiple_
        if height < s or width < s:
            raise ValueError(f"image_size {(height, width)} is smaller than one patch / network "
                             f"stride of {self.model_name} ({s}x{s} pixels)")
        return height - height % s, width - width % s  # whole patches (coarsest cells) only

    def _preprocess(self, images: list[np.ndarray], size) -> np.ndarray:
        """Resize and normalise to a float32 batch ``(b, 3, H, W)``."""
        interpolation = self.data_config_.get("interpolation", "bicubic")
        mean = np.asarray(self.data_config_["mean"], np.float32).reshape(1, 1, 3)
        std = np.asarray(self.data_config_["std"], np.float32).reshape(1, 1, 3)
        batch = [(resize_image(im, size, interpolation).astype(np.float32) / 255.0 - mean) / std
                 for im in images]
        return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))

    def _cached_runner(self):
        if self.memory is None:
            return _run_model
        from joblib import Memory

        memory = self.memory if isinstance(self.memory, Memory) else Memory(
            os.fspath(self.memory), verbose=0)
        return memory.cache(_run_model, ignore=["extractor"])

    def _cache_config(self) -> dict:
        checkpoint = None
        for path in (self.checkpoint_path, (self.pretrained_cfg_overlay or {}).get("file")):
            if path is not None:  # a changed file must not hit old cache entries
                stat = Path(path).stat()
                checkpoint = (checkpoint or ()) + (os.fspath(path), stat.st_size,
                                                   stat.st_mtime_ns)
        return dict(model=self.model_name, pretrained=self.pretrained, files=checkpoint,
                    overlay=repr(self.pretrained_cfg_overlay), layers=self.layer_indices_,
                    layer_norm=self.layer_norm, facet=self.facet,
                    model_kwargs=repr(self.model_kwargs))

    def extract(self, images, *, size=None) -> ExtractedFeatures:
        """Backbone token features of ``images`` on the model's token grid.

        Parameters
        ----------
        images : list of (path, PIL image or ndarray of shape (H, W, 3)), or ndarray of \
shape (n_images, H, W, 3)
            The images; all are resized to one input size (see ``image_size``).
        size : (int, int), optional
            Input size of this call when ``image_size`` is None (instead of the first
            image's); a [`Segmenter`][spectralnet_seg.segmentation.Segmenter] passes its
            training size so that all its batches share one token grid.

        Returns
        -------
        ExtractedFeatures
            ``features`` of shape ``(n_images, h, w, d)`` with ``h = H // stride_`` (ViT:
            ``d`` = embedding width times the number of selected blocks), ``colors`` (mean
            RGB of the pixels under each token), ``positions`` and original ``image_sizes``.
        """
        self._validate_params()
        self._build()
        self._resolve_layers()
        loaded = load_images(images, min_size=self.size_multiple_)
        size = self._input_size(loaded, size)
        run = self._cached_runner()
        config = self._cache_config()
        parts, colors = [], []
        starts = range(0, len(loaded), self.batch_size)
        for s in progress(starts, verbose=self.verbose, desc=f"features ({self.model_name})",
                          total=len(starts)):
            chunk = loaded[s:s + self.batch_size]
            parts.append(run(self, config, self._preprocess(chunk, size)))
            grid = parts[-1].shape[1:3]
            colors.extend(cell_means(resize_image(im, size).astype(np.float32) / 255.0, grid)
                          for im in chunk)
        features = np.concatenate(parts)
        grid = features.shape[1:3]
        positions = np.broadcast_to(token_positions(*grid), (len(loaded), *grid, 2))
        return ExtractedFeatures(features, np.stack(colors), positions,
                                 [im.shape[:2] for im in loaded])
