"""Pearson correlation of every SAE feature of a site with every MLP neuron, streamed exactly.

:class:`NeuronCorrelation` keeps, on the device of the activations, the float64 moments
``n``, ``sum x``, ``sum x^2`` (features), ``sum y``, ``sum y^2`` (neurons) and ``sum x y``
(``[F, M]``) over a token stream, and turns them into Pearson r in :meth:`result` (the only
host synchronisation), with :func:`~helpers.stats.accumulators.pearson`. Features arrive
sparse (:class:`~helpers.stats.accumulators.SparseActs`: ``k`` active features per token), so a
batch of ``n`` tokens costs ``k n M`` multiply-adds (one sparse-dense product), never
``F n M``; dense features are accepted too. Chunking, batching and merging change only the float64 rounding.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import ConfigError
from .accumulators import COUNT_DTYPE, SUM_DTYPE, Accumulator, SparseActs, pearson


def _sparse_transpose(idx: torch.Tensor, val: torch.Tensor, n_features: int) -> torch.Tensor:
    """The codes ``[n, k]`` as a sparse CSR ``[F, n]`` matrix (x transposed): a product with it
    costs one multiply-add per active (token, feature) and neuron (measured 6x faster on the CPU
    than adding ``k`` dense ``[n, M]`` products by index). Built with fixed-size operations only
    (a stable sort, a cumulative count), so nothing waits for the device."""
    n, k = idx.shape
    flat = idx.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    tokens = torch.div(order, k, rounding_mode="floor")  # row-major [n, k]: slot i is token i // k
    counts = torch.zeros(n_features + 1, dtype=torch.long, device=idx.device)
    counts.index_add_(0, flat + 1, torch.ones_like(flat))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(counts.cumsum(0), tokens, val.reshape(-1)[order], (n_features, n),
                                       check_invariants=False)


class NeuronCorrelation(Accumulator):
    """Moments of ``n_features`` features against ``n_neurons`` neurons over a token stream."""

    _state = ("n_tokens", "fired", "sum_x", "sum_sq_x", "sum_y", "sum_sq_y", "sum_xy")

    def __init__(self, n_features: int, n_neurons: int, device: torch.device | str = "cpu"):
        if n_features <= 0 or n_neurons <= 0:
            raise ConfigError(f"need at least one feature and one neuron, got {n_features} x {n_neurons}")
        self.n_features, self.n_neurons = n_features, n_neurons
        self.n_tokens = torch.zeros((), dtype=COUNT_DTYPE, device=device)
        self.fired = torch.zeros(n_features, dtype=COUNT_DTYPE, device=device)
        self.sum_x = torch.zeros(n_features, dtype=SUM_DTYPE, device=device)
        self.sum_sq_x = torch.zeros(n_features, dtype=SUM_DTYPE, device=device)
        self.sum_y = torch.zeros(n_neurons, dtype=SUM_DTYPE, device=device)
        self.sum_sq_y = torch.zeros(n_neurons, dtype=SUM_DTYPE, device=device)
        self.sum_xy = torch.zeros(n_features, n_neurons, dtype=SUM_DTYPE, device=device)

    @staticmethod
    def nbytes(n_features: int, n_neurons: int) -> int:
        """Bytes of the state (what :meth:`__init__` allocates)."""
        return 8 * (n_features * (n_neurons + 3) + 2 * n_neurons + 1)

    @torch.no_grad()
    def update(self, features: SparseActs | torch.Tensor, neurons: torch.Tensor) -> None:
        """Add one batch: ``features`` (sparse, or dense ``[n, F]``) and ``neurons`` ``[n, M]`` of
        the same ``n`` tokens."""
        dense = isinstance(features, torch.Tensor)
        n = features.shape[0] if dense else features.n_tokens
        f = features.shape[1] if dense else features.n_features
        if neurons.ndim != 2 or neurons.shape != (n, self.n_neurons) or f != self.n_features:
            raise ConfigError(
                f"need features [n, {self.n_features}] and neurons [n, {self.n_neurons}] of the same "
                f"tokens, got {f} features of {n} tokens and neurons {tuple(neurons.shape)}"
            )
        y = neurons.to(device=self.sum_y.device, dtype=SUM_DTYPE)
        self.n_tokens += n
        self.sum_y += y.sum(0)
        self.sum_sq_y += (y * y).sum(0)
        if dense:
            x = features.to(device=self.sum_x.device, dtype=SUM_DTYPE)
            self.fired += (x > 0).sum(0)
            self.sum_x += x.sum(0)
            self.sum_sq_x += (x * x).sum(0)
            self.sum_xy.addmm_(x.T, y)
            return
        idx, val = features.indices.to(self.sum_x.device), features.values.to(self.sum_x.device, SUM_DTYPE)
        flat_i, flat_v = idx.reshape(-1), val.reshape(-1)
        # padding slots hold 0: they add nothing
        self.fired.index_add_(0, flat_i, (flat_v > 0).to(COUNT_DTYPE))
        self.sum_x.index_add_(0, flat_i, flat_v)
        self.sum_sq_x.index_add_(0, flat_i, flat_v * flat_v)
        self.sum_xy.addmm_(_sparse_transpose(idx, val, self.n_features), y)

    def merge(self, other: "NeuronCorrelation") -> "NeuronCorrelation":
        if (other.n_features, other.n_neurons) != (self.n_features, self.n_neurons):
            raise ConfigError(f"cannot merge {other.n_features} x {other.n_neurons} moments into "
                              f"{self.n_features} x {self.n_neurons}")
        for name in self._state:
            getattr(self, name).add_(getattr(other, name).to(getattr(self, name).device))
        return self

    def result(self) -> dict[str, object]:
        """``n_tokens``, ``fired`` ``[F]`` (tokens with activation > 0) and ``r`` ``[F, M]``
        (float64; NaN where a feature or a neuron is constant over the stream)."""
        host = {name: getattr(self, name).cpu().numpy() for name in self._state}
        n = int(host["n_tokens"])
        r = pearson(n, host["sum_x"], host["sum_sq_x"], host["sum_y"], host["sum_sq_y"], host["sum_xy"])
        return {"n_tokens": n, "fired": host["fired"], "r": r}
