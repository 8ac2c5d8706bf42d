"""Weighted sum of degree-normalised kernels (the paper's feature graph + pixel graph)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._base import Kernel, KernelTags, degree_normalize, degree_normalize_dense
from ._capabilities import kernel_tags
from ._checks import _check_fitted
from ._graph_ops import _drop_diagonal
from ._registry import make_kernel, register_kernel, resolve_kernel


@register_kernel("sum")
class SumKernel(Kernel):
    """``G = sum_i w_i D_i^{-1/2} W_i D_i^{-1/2}``: a weighted sum of normalised kernels.

    Each member affinity ``W_i`` is normalised by its own degrees ``D_i`` before the sum, so
    members on different scales (a cosine feature graph, a binary pixel graph) contribute in
    proportion to their weights. The paper's kernel is
    ``SumKernel([KNNKernel(256), SpatialColorKernel()], weights=[1.0, 0.3])``.

    Parameters
    ----------
    kernels : list of Kernel or str
        Member kernels (objects or registered names); they are cloned, never mutated.
    weights : array-like of shape (n_kernels,), optional
        Non-negative weights ``w_i``; all 1 by default.

    Attributes
    ----------
    kernels_ : list of Kernel
        Fitted copies of the members (from the last [`graph`][graph]).
    degrees_ : list of ndarray of shape (n_samples_fit,)
        Degrees ``D_i`` of the member graphs, used by [`cross`][cross].
    weights_ : ndarray of shape (n_kernels,)

    Notes
    -----
    [`cap_neighbors`][cap_neighbors] caps the neighbour counts of every member.
    ``context`` is passed unchanged to every member. [`cross`][cross] returns the rows of the same
    operator for new points: each member's cross-affinity ``C_i`` normalised by the new
    points' degrees (row sums of ``C_i``) and the fitted degrees ``D_i``, then summed,
    ``sum_i w_i R_i^{-1/2} C_i D_i^{-1/2}``. Members without ``cross`` make it unavailable.

    Examples
    --------
    >>> import numpy as np
    >>> from spectralnet_seg.kernels import SumKernel, KNNKernel, RBFKernel
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> G = SumKernel([KNNKernel(5), RBFKernel()], weights=[1.0, 0.3]).graph(X)
    >>> G.shape, bool(abs(G - G.T).max() < 1e-12)
    ((40, 40), True)
    """

    _parameter_constraints: dict = {
        "kernels": [list, tuple],
        "weights": ["array-like", None],
    }

    def __init__(self, kernels, weights=None):
        self.kernels = kernels
        self.weights = weights

    def get_params(self, deep: bool = True) -> dict:
        """Parameters; with ``deep``, each member's as ``kernels__<i>__<name>`` too.

        As scikit-learn's composites do for their named members, so that
        ``set_params(kernel__kernels__0__n_neighbors=...)`` and grid searches reach the
        members (e.g. the feature graph of [`paper_kernel`][paper_kernel]).
        """
        params = super().get_params(deep=False)
        if deep:
            for i, member in enumerate(self.kernels):
                if hasattr(member, "get_params"):  # a registered name has no parameters
                    params[f"kernels__{i}"] = member
                    params.update({f"kernels__{i}__{key}": value
                                   for key, value in member.get_params(deep=True).items()})
        return params

    def set_params(self, **params) -> SumKernel:
        """Set parameters, members' included as ``kernels__<i>__<name>=value`` (and a member
        itself as ``kernels__<i>=kernel``)."""
        members: dict[int, dict] = {}
        replaced: dict[int, object] = {}
        for key in [k for k in params if k.startswith("kernels__")]:
            index, _, name = key[len("kernels__"):].partition("__")
            if not index.isdigit():
                raise ValueError(f"Invalid parameter {key!r} for SumKernel: use "
                                 "kernels__<index> or kernels__<index>__<parameter>.")
            if name:
                members.setdefault(int(index), {})[name] = params.pop(key)
            else:  # kernels__<i> itself, as get_params(deep=True) lists it
                replaced[int(index)] = params.pop(key)
        super().set_params(**params)  # a new member list first, then its members' settings
        if replaced:
            kernels = list(self.kernels)
            for index, member in replaced.items():
                if index >= len(kernels):
                    raise ValueError(f"Invalid parameter kernels__{index}: SumKernel has "
                                     f"{len(kernels)} members.")
                kernels[index] = member
            self.kernels = kernels
        for index, member_params in members.items():
            if index >= len(self.kernels):
                raise ValueError(f"Invalid parameter kernels__{index}__...: SumKernel has "
                                 f"{len(self.kernels)} members.")
            member = self.kernels[index]
            if not hasattr(member, "set_params"):
                raise ValueError(f"kernels__{index} is the name {member!r}, which has no "
                                 "parameters to set; give a Kernel object instead.")
            member.set_params(**member_params)
        return self

    def _validate_params(self) -> None:
        """sklearn's constraints, then the members (each validated) and the weights."""
        super()._validate_params()
        self._weights()
        for member in self.kernels:
            if isinstance(member, Kernel):
                member._validate_params()

    def _weights(self) -> np.ndarray:
        """The weights ``w_i`` as an array (all 1 by default), checked against the members."""
        if len(self.kernels) == 0:
            raise ValueError("SumKernel needs at least one member kernel.")
        for member in self.kernels:
            if not isinstance(member, (str, Kernel)):
                raise TypeError(f"SumKernel members must be Kernel objects or registered names, "
                                f"got {type(member).__name__}.")
        if self.weights is None:
            return np.ones(len(self.kernels))
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.shape != (len(self.kernels),):
            raise ValueError(f"weights has shape {weights.shape} but there are "
                             f"{len(self.kernels)} kernels; give one weight per kernel.")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.any():
            raise ValueError(f"weights must be finite, non-negative and not all zero, got "
                             f"{weights.tolist()}.")
        return weights

    def __kernel_tags__(self) -> KernelTags:
        """A capability any member needs is needed by the sum (the context, an affinity)."""
        members = [kernel_tags(member) for member in self.kernels]
        return KernelTags(requires_context=any(t.requires_context for t in members),
                          input_is_affinity=any(t.input_is_affinity for t in members))

    def graph_cost(self, n_samples: int, n_features: int) -> float:
        """The members' costs added up."""
        return sum(resolve_kernel(m).graph_cost(n_samples, n_features) for m in self.kernels)

    def input_geometry(self) -> str:
        """The geometry of the first member that reads features (e.g. the cosine kNN graph)."""
        geometries = [resolve_kernel(m).input_geometry() for m in self.kernels]
        return "cosine" if "cosine" in geometries else "euclidean"

    def cap_neighbors(self, n_max: int) -> dict[str, int]:
        """Cap the neighbour counts of every member (see
        [`Kernel.cap_neighbors`][Kernel.cap_neighbors]).

        Members given by name are built first; the members are copies, so kernel objects
        shared with other code are not modified.

        Parameters
        ----------
        n_max : int
            Largest neighbour count the data allows (``n_points - 1``).

        Returns
        -------
        dict of str to int
            Original values of the lowered parameters, as ``"kernels[i].<name>"``.
        """
        members = [resolve_kernel(member) for member in self.kernels]
        changed = {}
        for i, member in enumerate(members):
            capped = member.cap_neighbors(n_max) if hasattr(member, "cap_neighbors") else {}
            changed.update({f"kernels[{i}].{name}": old for name, old in capped.items()})
        if changed:
            self.kernels = members
        return changed

    def graph(self, X, context: Any = None) -> sp.csr_matrix:
        """Weighted sum of the members' degree-normalised graphs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature vectors, passed to every member.
        context : object, optional
            Side information, passed to every member.

        Returns
        -------
        G : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float64
            Symmetric, non-negative, zero diagonal.
        """
        self._validate_params()
        weights = self._weights()
        members = [resolve_kernel(member) for member in self.kernels]
        total, degrees = None, []
        for weight, member in zip(weights, members, strict=True):
            W = sp.csr_matrix(member.graph(X, context), dtype=np.float64)
            if total is not None and W.shape != total.shape:
                raise ValueError(f"member kernels disagree on the graph shape: {W.shape} vs "
                                 f"{total.shape}.")
            degree = np.asarray(W.sum(axis=1)).ravel()
            degrees.append(degree)
            term = degree_normalize(W, degree) * weight
            total = term if total is None else total + term
        self.kernels_, self.degrees_, self.weights_ = members, degrees, weights
        G = _drop_diagonal(total)
        G.eliminate_zeros()
        G.sort_indices()
        return G

    def cross(self, Y, context: Any = None) -> sp.csr_matrix:
        """Rows of the summed normalised operator for new points (see Notes).

        Parameters
        ----------
        Y : array-like of shape (n_queries, n_features)
            New points, passed to every member.
        context : object, optional
            Side information for ``Y``, passed to every member.

        Returns
        -------
        C : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit), float64
        """
        _check_fitted(self, "kernels_")
        total = None
        for weight, member, degree in zip(self.weights_, self.kernels_, self.degrees_, strict=True):
            C = sp.csr_matrix(member.cross(Y, context), dtype=np.float64)
            term = degree_normalize(C, column_degree=degree) * weight
            total = term if total is None else total + term
        return sp.csr_matrix(total)

    def batch(self, X_batch, context: Any = None):
        """Weighted sum of the members' degree-normalised minibatch affinities.

        Parameters
        ----------
        X_batch : torch.Tensor of shape (batch_size, n_features)
            Minibatch, passed to every member.
        context : object, optional
            Side information for the batch, passed to every member.

        Returns
        -------
        G : torch.Tensor of shape (batch_size, batch_size)
            Symmetric, non-negative, zero diagonal, no gradient.
        """
        weights = self._weights()  # validated once by the estimator, not every step
        total = None
        for weight, member in zip(weights, self.kernels, strict=True):
            member = make_kernel(member) if isinstance(member, str) else member
            term = degree_normalize_dense(member.batch(X_batch, context)) * float(weight)
            total = term if total is None else total + term
        return total
