"""The training graph of the neural estimators: the kernel, its context and its checks.

A fit learns from the user's graph (``fit(X, graph=W)``), from the kernel's global graph
(``sampler="graph"``, when building it is cheap), or from graphs built inside each
minibatch (``sampler="minibatch"``). This mixin decides which, builds and validates the
global graph, and gives clear errors and warnings for graphs the method cannot learn from.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.exceptions import ConvergenceWarning

from .._utils import user_stacklevel
from ..kernels import as_token_context, kernel_tags
from . import _neural_io as io
from . import _neural_settings as settings
from ._spectral_embedding import DisconnectedGraphWarning, check_affinity


class TrainingGraphMixin:
    """Kernel, context and global training graph of
    [`BaseNeuralEigenClustering`][spectralnet_seg.cluster._neural_base.BaseNeuralEigenClustering]."""

    def _feature_kernel(self):
        kernel = self._resolve_kernel()
        if kernel_tags(kernel).input_is_affinity:
            raise ValueError(
                f"{type(self).__name__} needs features for its network, not an affinity "
                "matrix: kernel='precomputed' is not supported. Pass the features as X and "
                "your affinity as fit(X, graph=W)."
            )
        return kernel

    def _check_context(self, context, n_samples: int):
        """The context for the kernel: checked against ``X`` when the kernel needs one."""
        if self.kernel_ is None or not kernel_tags(self.kernel_).requires_context:
            return None
        return as_token_context(context, n_samples, owner=type(self.kernel_).__name__)

    def _chosen_sampler(self, X, user_graph) -> str:
        if user_graph is not None:
            return "graph"
        if self.sampler != "auto":
            return self.sampler
        cost = self.kernel_.graph_cost(X.shape[0], X.shape[1])
        return "graph" if cost <= settings.GRAPH_COST_BUDGET else "minibatch"

    def _training_graph(self, X, context, user_graph) -> sp.csr_matrix | None:
        """The global graph (user's or the kernel's), validated; None for minibatch graphs."""
        self.sampler_ = self._chosen_sampler(X, user_graph)
        if self.sampler_ == "minibatch":
            return None
        if user_graph is not None:
            W = check_affinity(user_graph, name="graph")
            if W.shape[0] != X.shape[0]:
                raise ValueError(f"graph is {W.shape[0]} x {W.shape[0]} but X has "
                                 f"{X.shape[0]} rows; give one node per row of X.")
        else:
            if not isinstance(X, np.ndarray):
                X = io.gather_rows(X, np.arange(X.shape[0])).numpy()
            self._cap_kernel_neighbors(X.shape[0] - 1, "n_samples - 1")
            W = check_affinity(self.kernel_.graph(X, context),
                               name=f"{type(self.kernel_).__name__}.graph(X)")
        W = W - sp.diags(W.diagonal())  # self-loops carry no information between points
        W = sp.csr_matrix(W)
        W.eliminate_zeros()
        self._check_graph(W)
        return W

    def _kernel_for_chunk(self, n_rows: int) -> None:
        """Set ``kernel_`` for a ``partial_fit`` chunk of ``n_rows`` rows: the stream's
        kernel, its neighbour counts capped (with a warning) for this chunk only.

        The stream's kernel is kept apart: a first chunk of 6 rows used to lower
        ``n_neighbors`` to 5 for the whole stream, and a later chunk of 4 rows failed
        ("needs 5 neighbours per point but there are only 4 points").
        """
        if getattr(self, "_stream_kernel", None) is None:  # the first chunk, or after fit
            self._stream_kernel = copy.deepcopy(self.kernel_)
        self.kernel_ = copy.deepcopy(self._stream_kernel)
        if n_rows < self.batch_size_:
            self._cap_kernel_neighbors(n_rows - 1, "the chunk's rows - 1")
        else:  # after a fit on a global graph, whose kernel the batch size did not bound
            self._cap_kernel_neighbors(self.batch_size_ - 1, "batch_size - 1")

    def _cap_kernel_neighbors(self, limit: int, what: str) -> None:
        """Lower the kernel's declared neighbour counts to what a graph of the data allows."""
        if self.kernel_ is None or not hasattr(self.kernel_, "cap_neighbors"):
            return
        lowered = self.kernel_.cap_neighbors(max(int(limit), 1))
        if lowered:
            warnings.warn(f"{type(self.kernel_).__name__} parameters {lowered} exceed {what} "
                          f"= {limit}; using {limit} instead.", UserWarning,
                          stacklevel=user_stacklevel())

    def _check_graph(self, W: sp.csr_matrix) -> None:
        """Clear errors and warnings for graphs the method cannot learn from."""
        if W.nnz == 0:
            raise ValueError(
                "the affinity graph has no edges (every weight is 0): the kernel's bandwidth "
                "is too small for the scale of the data (e.g. RBF gamma too large), or the "
                "data are all identical. Use a kNN kernel or a wider bandwidth.")
        degree = np.asarray(W.sum(axis=1)).ravel()
        isolated = int(np.count_nonzero(degree <= 0))
        if isolated:
            warnings.warn(
                f"{isolated} of {W.shape[0]} points have no edge in the affinity graph; the "
                "objective says nothing about them and their labels come from the network "
                "alone.", DisconnectedGraphWarning, stacklevel=user_stacklevel())
        n_components, _ = connected_components(W, directed=False)
        n_components -= isolated
        if n_components > self._n_outputs():
            warnings.warn(
                f"the affinity graph has {n_components} connected components but only "
                f"{self._n_outputs()} outputs: every component indicator is an eigenfunction "
                "of eigenvalue 1, so the top eigenfunctions are not unique and the fit cannot "
                "converge to a well-defined answer. Increase the kernel's n_neighbors (or "
                "bandwidth) to connect the graph, or ask for more clusters.",
                ConvergenceWarning, stacklevel=user_stacklevel())
        elif n_components > 1 and n_components != self.n_clusters:
            # As eigsh on the same graph (as many components as clusters are the answer);
            # the network also has to learn a top eigenspace of tied eigenvalues (one
            # indicator per component, each of 1).
            warnings.warn(
                f"the affinity graph has {n_components} connected components; the leading "
                "eigenfunctions will mostly separate the components, and their tied "
                "eigenvalue 1 is harder to learn (compare normalized_cut_ with "
                "EigshSpectralClustering's). Increase the kernel's n_neighbors (or "
                "bandwidth) to connect the graph.",
                DisconnectedGraphWarning, stacklevel=user_stacklevel())
