"""The ψ networks: an MLP for feature vectors and a small token transformer for token grids.

Both end in the same head, ``Linear(width, K)`` whose weight has orthonormal rows (kept so
by ``torch.nn.utils.parametrizations.orthogonal``), as in Deng & Luo (ICCV 2023): the
rows span K orthogonal directions of the trunk's feature space, so the K outputs start out
decorrelated and cannot collapse onto one direction of the last hidden layer.

The modules know nothing about kernels, losses or scikit-learn; the estimators own the
training loop (see [`spectralnet_seg.cluster`][spectralnet_seg.cluster]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

__all__ = ["InputStandardization", "MLPEigenfunctions", "RandomFourierFeatures",
           "TransformerEigenfunctions", "orthogonal_head"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _activation(name: str) -> type[nn.Module]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
        ) from None


def _rebuild(cls: type[nn.Module], kwargs: dict, state: dict, training: bool) -> nn.Module:
    module = cls(**kwargs)
    module.load_state_dict(state)
    return module.train(training)


class _PicklableByStateDict(nn.Module):
    """Pickle (and deep-copy) through the constructor arguments and the ``state_dict``.

    torch refuses to pickle modules with parametrisations (the orthogonal head), which
    would make fitted estimators impossible to save with joblib; rebuilding from the
    arguments and loading the weights sidesteps that.
    """

    _init_kwargs: dict

    def __reduce__(self):
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return (_rebuild, (type(self), dict(self._init_kwargs), state, self.training))


def orthogonal_head(in_features: int, n_outputs: int, *, bias: bool = True) -> nn.Linear:
    """``Linear(in_features, n_outputs)`` whose weight keeps orthonormal rows during training.

    Parameters
    ----------
    in_features : int
        Width of the trunk's output.
    n_outputs : int
        Number of eigenfunctions (or clusters) K. When ``n_outputs > in_features`` the
        weight can only have orthonormal *columns*; the parametrisation then keeps those.
    bias : bool, default=True
        Add a learnable bias (the outputs are not mean-centred, so the constant
        eigenfunction needs it).

    Returns
    -------
    torch.nn.Linear
        With an ``orthogonal`` parametrisation registered on ``weight``.
    """
    head = nn.Linear(in_features, n_outputs, bias=bias)
    return orthogonal(head)


class RandomFourierFeatures(nn.Module):
    """Fixed random Fourier features x ↦ [sin(xB), cos(xB)], B ~ N(0, scale²) (d × m).

    An MLP on low-dimensional coordinates is biased towards functions that vary slowly
    in every direction (the spectral bias of Rahaman et al., 2019); cluster indicators of
    non-convex shapes (two moons, concentric circles) change sharply across narrow gaps and
    it fails to reach them. Fourier features of the inputs (Tancik et al., 2020) remove
    that bias. ``B`` is a buffer: it is drawn once (from the global torch RNG, which the
    estimators seed) and never trained.

    Parameters
    ----------
    in_features : int
        Input dimension d.
    n_frequencies : int
        Number m of random frequencies; the output has 2m features.
    scale : float
        Standard deviation of the frequencies, in radians per input unit: a feature
        oscillates over a length of about 2π / scale. Choose it near the inverse of the
        kernel bandwidth (e.g. ~2-3 for an RBF ``gamma`` of 50 on unit-scale data).

    Examples
    --------
    >>> import torch
    >>> rff = RandomFourierFeatures(2, 8, scale=1.0)
    >>> rff(torch.zeros(3, 2)).shape
    torch.Size([3, 16])
    """

    def __init__(self, in_features: int, n_frequencies: int, scale: float) -> None:
        super().__init__()
        if n_frequencies < 1 or not scale > 0:
            raise ValueError(
                f"n_frequencies must be >= 1 and scale > 0, got {n_frequencies} and {scale}"
            )
        self.register_buffer("frequencies", torch.randn(in_features, n_frequencies) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (..., d) → (..., 2m)."""
        angles = x.to(self.frequencies.dtype) @ self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class InputStandardization(nn.Module):
    """Fixed affine map of the inputs, ``(x / ‖x‖ if normalize_rows) - offset) / scale``.

    The estimators fit ``offset`` and the single ``scale`` on the training data, so that the
    network sees inputs of unit root-mean-square norm whatever the units of the features
    (pixel values, 1e20, 1e-30): one scalar keeps the geometry the kernel's distances see.
    ``normalize_rows`` first projects rows to the unit sphere, the geometry of a cosine
    kernel, which ignores the norm of a feature vector.

    Parameters
    ----------
    offset : torch.Tensor of shape (d,)
        Subtracted after the optional row normalisation (the training mean).
    scale : float
        Divides the centred inputs (their root-mean-square norm over the training data).
    normalize_rows : bool, default=False
        Divide each row by its Euclidean norm first (zero rows stay zero).
    """

    def __init__(self, offset: torch.Tensor, scale: float, normalize_rows: bool = False) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.normalize_rows = bool(normalize_rows)
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (..., d) → same shape."""
        if self.normalize_rows:
            norms = x.norm(dim=-1, keepdim=True)
            x = x / torch.where(norms > 0, norms, torch.ones_like(norms))
        return (x - self.offset) / self.scale


class MLPEigenfunctions(_PicklableByStateDict):
    """Multi-layer perceptron ψ: R^d → R^K for plain feature vectors.

    Optional [`InputStandardization`][InputStandardization] and random Fourier features (appended to
    the
    standardised inputs), then ``Linear → activation`` blocks (optionally with LayerNorm)
    and an orthogonal head (see [`orthogonal_head`][orthogonal_head]).

    Parameters
    ----------
    in_features : int
        Input dimension d.
    n_outputs : int
        Number of outputs K (eigenfunctions or cluster logits).
    hidden : sequence of int, default=(256, 256)
        Widths of the hidden layers; empty gives a linear map.
    activation : {"gelu", "relu", "silu", "tanh"}, default="gelu"
        Non-linearity after each hidden layer.
    layer_norm : bool, default=False
        Insert a LayerNorm before each activation.
    fourier_features : int, default=0
        If > 0, the standardised inputs are extended with this many
        [`RandomFourierFeatures`][RandomFourierFeatures] frequencies (2 × as many features). An MLP
        on raw
        coordinates is biased towards slowly varying functions and misses the sharp cluster
        indicators of non-convex shapes (two moons); the inputs themselves are kept, so no
        linear information is lost.
    fourier_scale : float, default=1.0
        Standard deviation of those frequencies (radians per standardised input unit).
    input_offset : array-like of shape (d,), optional
        Offset of the [`InputStandardization`][InputStandardization] (none when None).
    input_scale : float, default=1.0
        Its scale.
    normalize_rows : bool, default=False
        Its row normalisation (cosine geometry).

    Examples
    --------
    >>> import torch
    >>> net = MLPEigenfunctions(5, 3, hidden=(16,))
    >>> net(torch.randn(4, 5)).shape
    torch.Size([4, 3])
    """

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (256, 256), *,
                 activation: str = "gelu", layer_norm: bool = False,
                 fourier_features: int = 0, fourier_scale: float = 1.0,
                 input_offset=None, input_scale: float = 1.0,
                 normalize_rows: bool = False) -> None:
        super().__init__()
        if in_features < 1 or n_outputs < 1:
            raise ValueError(
                f"in_features and n_outputs must be >= 1, got {in_features} and {n_outputs}"
            )
        if fourier_features < 0:
            raise ValueError(f"fourier_features must be >= 0, got {fourier_features}")
        offset = None if input_offset is None else [float(v) for v in input_offset]
        self._init_kwargs = dict(in_features=in_features, n_outputs=n_outputs,
                                 hidden=tuple(int(h) for h in hidden), activation=activation,
                                 layer_norm=layer_norm, fourier_features=int(fourier_features),
                                 fourier_scale=float(fourier_scale), input_offset=offset,
                                 input_scale=float(input_scale),
                                 normalize_rows=bool(normalize_rows))
        act = _activation(activation)
        self.standardize = (None if offset is None and not normalize_rows and input_scale == 1.0
                            else InputStandardization(
                                torch.zeros(in_features) if offset is None
                                else torch.tensor(offset), input_scale, normalize_rows))
        self.fourier = (RandomFourierFeatures(in_features, int(fourier_features),
                                              float(fourier_scale))
                        if fourier_features else None)
        layers: list[nn.Module] = []
        width = in_features + 2 * int(fourier_features)
        for size in hidden:
            if int(size) < 1:
                raise ValueError(f"hidden layer sizes must be >= 1, got {tuple(hidden)}")
            layers.append(nn.Linear(width, int(size)))
            if layer_norm:
                layers.append(nn.LayerNorm(int(size)))
            layers.append(act())
            width = int(size)
        self.in_features = in_features
        self.n_outputs = n_outputs
        self.trunk = nn.Sequential(*layers)
        self.head = orthogonal_head(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (..., d) to outputs of shape (..., K)."""
        if self.standardize is not None:
            x = self.standardize(x)
        if self.fourier is not None:
            x = torch.cat([x, self.fourier(x)], dim=-1)
        return self.head(self.trunk(x))


class LinearAttention(nn.Module):
    """Multi-head linear attention (Katharopoulos et al., 2020) over a token axis.

    softmax(QKᵀ)V is replaced by φ(Q)(φ(K)ᵀV) / (φ(Q) Σ_t φ(K_t)) with φ = elu + 1, so the
    cost is linear in the number of tokens (feature maps of 40 × 40 tokens and more).

    Parameters
    ----------
    width : int
        Token width (divisible by ``n_heads``).
    n_heads : int
        Number of heads.
    """

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"width={width} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (batch, tokens, width) → same shape."""
        b, t, w = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.n_heads, w // self.n_heads).unbind(2)
        q = nn.functional.elu(q) + 1.0  # (b, t, h, c), positive feature map
        k = nn.functional.elu(k) + 1.0
        kv = torch.einsum("bthc,bthe->bhce", k, v)  # (b, h, c, c)
        normaliser = torch.einsum("bthc,bhc->bth", q, k.sum(dim=1)).clamp_min(1e-6)
        out = torch.einsum("bthc,bhce->bthe", q, kv) / normaliser[..., None]
        return self.proj(out.reshape(b, t, w))


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.attn = LinearAttention(width, n_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEigenfunctions(_PicklableByStateDict):
    """Token transformer ψ for feature grids: the network of Deng & Luo (ICCV 2023).

    Input projection ``Linear(d, width)``, ``n_blocks`` pre-LN blocks with linear attention
    across the tokens of each image, a final LayerNorm and the orthogonal head.

    Parameters
    ----------
    in_features : int
        Token feature dimension d (e.g. 3 × 384 for three concatenated ViT-S blocks).
    n_outputs : int
        Number of outputs K.
    width : int, default=256
        Token width inside the trunk.
    n_blocks : int, default=2
        Number of transformer blocks.
    n_heads : int, default=4
        Attention heads per block.
    mlp_ratio : float, default=2.0
        Hidden width of each block's MLP relative to ``width``.

    Notes
    -----
    ``forward`` takes token grids of shape (batch, tokens, d) — tokens of one image attend to
    each other — and returns (batch, tokens, K). A 2-D input of shape (n, d) is treated as n
    independent one-token sequences, so per-row estimators can use the module too; with a
    single token, attention reduces to a learned linear map of that token.

    Examples
    --------
    >>> import torch
    >>> net = TransformerEigenfunctions(8, 4, width=16, n_heads=2)
    >>> net(torch.randn(2, 9, 8)).shape
    torch.Size([2, 9, 4])
    """

    def __init__(self, in_features: int, n_outputs: int, *, width: int = 256, n_blocks: int = 2,
                 n_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if in_features < 1 or n_outputs < 1:
            raise ValueError(
                f"in_features and n_outputs must be >= 1, got {in_features} and {n_outputs}"
            )
        self._init_kwargs = dict(in_features=in_features, n_outputs=n_outputs, width=width,
                                 n_blocks=n_blocks, n_heads=n_heads, mlp_ratio=mlp_ratio)
        self.in_features = in_features
        self.n_outputs = n_outputs
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[_Block(width, n_heads, mlp_ratio) for _ in range(n_blocks)])
        self.norm = nn.LayerNorm(width)
        self.head = orthogonal_head(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map tokens (batch, tokens, d) to (batch, tokens, K); (n, d) maps to (n, K)."""
        if x.ndim == 2:
            return self.forward(x[:, None, :])[:, 0, :]
        if x.ndim != 3:
            raise ValueError(
                f"expected input of shape (batch, tokens, features) or (n, features), "
                f"got shape {tuple(x.shape)}"
            )
        return self.head(self.norm(self.blocks(self.embed(x))))
