"""Setting up a neural estimator's run: the "auto" settings and the ψ network.

The values decided from the data (batch size, input standardisation, Fourier features and
their scale, diffusion power) are computed by [`_neural_settings`][_neural_settings] and
recorded here as fitted attributes (``batch_size_``, ``fourier_scale_``, ...); the network is
built from them, or the user's network is checked on two rows.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral

import numpy as np
import torch
from torch import nn

from .._utils import user_stacklevel
from ..eigenfunctions import MLPEigenfunctions
from . import _neural_io as io
from . import _neural_settings as settings
from ._pair_sampler import GraphPairSampler


class NetworkSetupMixin:
    """The settings and the network of a new run of
    [`BaseNeuralEigenClustering`][spectralnet_seg.cluster._neural_base.BaseNeuralEigenClustering]."""

    def _resolve_settings(self, X, W, generator: torch.Generator, *, context,
                          streaming: bool = False) -> None:
        """Decide the "auto" settings from the data and record them (``*_`` attributes).

        ``streaming``: ``X`` is the first chunk of a ``partial_fit`` stream. Its size does
        not bound the batch of later chunks (each call trains on batches of at most its own
        rows); a first chunk of 50 rows used to fix 50-point batch graphs for the whole
        stream.
        """
        K, n = self._n_outputs(), X.shape[0]
        pairs = W is not None
        self.batch_size_ = (settings.default_batch_size(K, np.inf if streaming else n,
                                                        pairs=pairs)
                            if self.batch_size == "auto" else int(self.batch_size))
        if not pairs:  # minibatch graphs: the neighbours come from one batch
            if not streaming:
                self.batch_size_ = min(self.batch_size_, n)
            self._cap_kernel_neighbors(self.batch_size_ - 1, "batch_size - 1")
            if streaming:  # this first chunk may be smaller than a batch: its own cap
                self._kernel_for_chunk(n)
        geometry = "euclidean" if self.kernel_ is None else self.kernel_.input_geometry()
        self._input_statistics = settings.input_statistics(
            X, normalize_rows=geometry == "cosine", generator=generator)
        default_network = self.network is None or self.network == "mlp"
        if not default_network and self.fourier_features not in ("auto", 0):
            warnings.warn(
                f"fourier_features={self.fourier_features} is ignored: the frequencies are "
                "inputs of the default MLP, and a network= of your own takes X as it is "
                "(fourier_features_ is 0).", UserWarning, stacklevel=user_stacklevel())
        self.fourier_features_ = (0 if not default_network
                                  else settings.AUTO_FOURIER_FEATURES
                                  if self.fourier_features == "auto"
                                  else int(self.fourier_features))
        self.fourier_scale_ = (float(self.fourier_scale) if self.fourier_scale != "auto"
                               else self._auto_fourier_scale(X, W, generator, context))
        self.diffusion_steps_ = 1 if self.diffusion_steps == "auto" else int(
            self.diffusion_steps)

    def _auto_fourier_scale(self, X, W, generator, context) -> float:
        if self.fourier_features_ == 0:
            return 1.0
        if W is not None:
            heads, tails = GraphPairSampler(W).sample(2048, generator=generator)
            heads, tails = heads.numpy(), tails.numpy()
        else:  # the edges of one minibatch graph
            rows = np.sort(torch.randperm(X.shape[0], generator=generator)[
                :self.batch_size_].numpy())
            batch = io.gather_rows(X, rows)
            batch_context = None if context is None else context[rows]
            edges = np.argwhere(self.kernel_.batch(batch, batch_context).numpy() > 0)
            if edges.size == 0:
                return 1.0
            keep = torch.randperm(len(edges), generator=generator)[:2048].numpy()
            heads, tails = rows[edges[keep, 0]], rows[edges[keep, 1]]
        return settings.fourier_scale_from_edges(X, heads, tails, self._input_statistics)

    def _build_network(self, n_features: int, init_seed: int) -> nn.Module:
        """A fresh ψ network (seeded without touching the global RNG) or a copy of the user's."""
        if isinstance(self.network, nn.Module):
            return copy.deepcopy(self.network)
        hidden = tuple(self.hidden_layer_sizes)
        if not all(isinstance(h, Integral) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes must be a sequence of positive ints, got {hidden!r}"
            )
        stats = self._input_statistics
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (restored by fork_rng): torch.manual_seed would also
            # reseed the CUDA generators, which fork_rng(devices=[]) does not restore.
            torch.default_generator.manual_seed(init_seed)
            return MLPEigenfunctions(n_features, self._n_outputs(), hidden=hidden,
                                     fourier_features=self.fourier_features_,
                                     fourier_scale=self.fourier_scale_,
                                     input_offset=stats.offset, input_scale=stats.scale,
                                     normalize_rows=stats.normalize_rows)

    def _check_network_output(self, network: nn.Module, X, device: torch.device) -> None:
        """Run two rows through a user network to give a clear error for a wrong shape."""
        K = self._n_outputs()
        probe = io.gather_rows(X, np.arange(2)).to(device)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                out = network(probe)
        except Exception as exc:  # any failure here is a mismatch between network and data
            raise ValueError(
                f"the network failed on a batch of shape {tuple(probe.shape)} "
                f"(n_features={X.shape[1]}): {exc}"
            ) from exc
        finally:
            network.train(was_training)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, K):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the network must map a batch of shape (batch_size, n_features) to "
                f"(batch_size, {K}) ({K} = {self._outputs_name()}); it returned {shape} for "
                f"an input of shape {tuple(probe.shape)}"
            )
