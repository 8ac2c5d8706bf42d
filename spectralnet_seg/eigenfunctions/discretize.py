"""Discrete outputs: Gumbel-softmax relaxation of cluster assignments and its temperature schedule."""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_temperature", "gumbel_softmax"]


def gumbel_softmax(logits: torch.Tensor, temperature: float, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Soft Gumbel-softmax sample: softmax((z + g) / τ) with g ~ Gumbel(0, 1) i.i.d.

    Unlike ``torch.nn.functional.gumbel_softmax``, the noise comes from ``generator``
    (global RNG untouched), so training is reproducible under ``random_state``.

    Parameters
    ----------
    logits : torch.Tensor of shape (b, K)
        Unnormalised cluster scores z.
    temperature : float
        τ > 0; small τ gives nearly one-hot samples.
    generator : torch.Generator, optional
        Source of the uniform noise. The noise is drawn on the generator's device and moved
        to the device of ``logits`` (a CPU generator gives the same noise on every device).

    Returns
    -------
    torch.Tensor of shape (b, K)
        Rows on the probability simplex; differentiable w.r.t. ``logits``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    # g = -log(-log u); both logs clamped away from 0 so that u = 0 or u ≈ 1 stay finite.
    gumbel = -torch.log((-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny))
    gumbel = gumbel.to(device=logits.device, dtype=logits.dtype)
    return torch.softmax((logits + gumbel) / temperature, dim=-1)


def cosine_temperature(step: int, total_steps: int, start: float = 1.0, end: float = 0.3) -> float:
    r"""Cosine annealing τ(s) = τ_end + (τ_start − τ_end) · (1 + cos(π s / T)) / 2.

    Parameters
    ----------
    step : int
        Current step s (clipped to [0, T]).
    total_steps : int
        Length T of the schedule.
    start, end : float, default=1.0, 0.3
        Temperatures at s = 0 and s = T.

    Returns
    -------
    float

    Examples
    --------
    >>> cosine_temperature(0, 100), cosine_temperature(100, 100)
    (1.0, 0.3)
    """
    if total_steps <= 0:
        return float(end)
    progress = min(max(step, 0), total_steps) / total_steps
    weight = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 at the start, 0 at the end
    return float(weight * start + (1.0 - weight) * end)
