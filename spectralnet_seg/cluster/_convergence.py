"""Label-free stopping and the learning-rate / diffusion-time schedule of neural training.

Training runs at a constant learning rate while the eigenvalue estimates still rise. Every
``check_every`` steps the mean eigenvalue estimate is compared with the best so far; once it
has not risen by more than ``tol × (1 − best)`` (a fraction of the remaining spectral gap to
1) for ``n_iter_no_change`` checks, the run has *converged* and the learning rate is
cosine-annealed to 0 over a further quarter of the steps done, which removes the SGD noise
from the final network. ``max_iter`` caps the whole run: when it comes first the anneal
starts at 80 % of it and the run is reported as not converged.

The diffusion time t is chosen from the same estimates: the smallest t at which the K-th
eigenvalue λ_K keeps about half of its weight in the diffused objective
(λ_K ((1 + λ_K)/2)^{t-1} ≈ ½). Local graphs have top eigenvalues crowded against 1 (two
moons: 1, 0.99995, 0.995); t spreads them apart (t = 32: 1, 0.9992, 0.92) without changing
the eigenfunctions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["PlateauSchedule", "diffusion_steps_for"]

#: Share of the eigenvalue estimate's weight the K-th eigenfunction keeps after diffusion.
_TARGET_DIFFUSED_EIGENVALUE = 0.5
#: Largest automatic diffusion time: the walk costs one gather per step and pair.
MAX_AUTO_DIFFUSION_STEPS = 32
#: Share of ``max_iter`` after which the anneal starts when no plateau was found.
_FORCED_ANNEAL_AT = 0.8
#: Length of the anneal relative to the steps done before it.
_ANNEAL_FRACTION = 0.25


def diffusion_steps_for(eigenvalue: float, *, max_steps: int = MAX_AUTO_DIFFUSION_STEPS) -> int:
    """Diffusion time t at which ``λ ((1 + λ)/2)^{t-1}`` falls to about ½ (1 ≤ t ≤ max_steps).

    Parameters
    ----------
    eigenvalue : float
        Estimate of the K-th largest eigenvalue λ_K of the random-walk operator.
    max_steps : int, default=32
        Upper bound on t.

    Returns
    -------
    int

    Examples
    --------
    >>> diffusion_steps_for(0.4), diffusion_steps_for(0.9), diffusion_steps_for(1.0)
    (1, 12, 32)
    """
    lam = float(eigenvalue)
    if not lam > _TARGET_DIFFUSED_EIGENVALUE:
        return 1
    if lam >= 1.0:
        return int(max_steps)
    steps = 1.0 + math.log(_TARGET_DIFFUSED_EIGENVALUE / lam) / math.log((1.0 + lam) / 2.0)
    return int(np.clip(round(steps), 1, max_steps))


@dataclass
class PlateauSchedule:
    """Plateau detection on the eigenvalue estimates, then a cosine learning-rate anneal.

    Parameters
    ----------
    max_iter : int
        Hard cap on the number of steps.
    tol : float
        Relative tolerance: a check "improves" when the mean eigenvalue estimate rises by
        more than ``tol × (1 − best)``.
    n_iter_no_change : int
        Checks without improvement that make a plateau.
    check_every : int
        Steps between checks.

    Attributes
    ----------
    converged : bool
        Whether the plateau was reached before ``max_iter`` forced the anneal.
    history : list of dict
        One entry per check: ``step``, ``mean_eigenvalue``, ``diffusion_steps``.
    """

    max_iter: int
    tol: float
    n_iter_no_change: int
    check_every: int
    best: float | None = None
    n_without_improvement: int = 0
    anneal_start: int | None = None
    anneal_length: int = 0
    converged: bool = False
    history: list = field(default_factory=list)

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of the initial learning rate at ``step`` (1 until the anneal)."""
        if self.anneal_start is None:
            return 1.0
        progress = min(max(step - self.anneal_start, 0) / max(self.anneal_length, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def is_check(self, step: int) -> bool:
        """Whether the eigenvalue estimates are examined after ``step`` steps."""
        return self.anneal_start is None and step % self.check_every == 0

    def update(self, step: int, eigenvalues: np.ndarray, diffusion_steps: int) -> None:
        """Record a check after ``step`` steps; start the anneal on a plateau or near the cap."""
        mean = float(np.mean(eigenvalues))
        self.history.append({"step": int(step), "mean_eigenvalue": mean,
                             "diffusion_steps": int(diffusion_steps)})
        if self.best is None or mean > self.best + self.tol * (1.0 - self.best):
            self.n_without_improvement = 0
        else:
            self.n_without_improvement += 1
        self.best = mean if self.best is None else max(self.best, mean)
        self.converged = self.n_without_improvement >= self.n_iter_no_change
        if self.converged or step >= _FORCED_ANNEAL_AT * self.max_iter:
            self.anneal_start = int(step)
            remaining = self.max_iter - step
            self.anneal_length = int(max(1, min(remaining,
                                                max(self.check_every, _ANNEAL_FRACTION * step))))

    def is_done(self, step: int) -> bool:
        """Whether training stops after ``step`` steps."""
        if step >= self.max_iter:
            return True
        return self.anneal_start is not None and step >= self.anneal_start + self.anneal_length

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
