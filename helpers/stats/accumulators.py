"""Streaming accumulators for per-feature and cross-layer statistics.

Each accumulator is a small object with ``update(batch)``, ``merge(other)``,
``state_dict()`` / ``load_state_dict()`` and ``result()``. Its state lives on
the device of the activations and is only copied to the host in ``result()``.

A batch is a :class:`SparseBatch`: for every site, the active features of each
token as padded ``[n_tokens, k]`` index and value tensors (value 0 marks
padding). SAE activations are sparse (tens of features out of thousands), so
pair statistics are accumulated only over pairs of *active* features: a token
with ``kL`` features active at site L and ``kR`` at L+1 costs ``kL * kR``
increments, never ``F^2``.

Precision (see ``artefacts/README.md``):

- counts are exact integers: firing counts int64; the big pair and edge
  counts int64, or int32 when the stream is known to hold fewer than 2^31
  tokens (:func:`count_dtype_for`), which halves their memory and is still
  exact (a count never exceeds the tokens seen);
- per-feature sums (x, x^2) are float64;
- the big sums of products (pairs, graph weights) are :class:`StreamedSums`:
  float64, or float32 on the device flushed into a float64 copy on the host
  every ``flush_tokens`` tokens, so that no float32 partial sum holds more
  than ``flush_tokens`` terms (this is what lets GPT-2-scale statistics fit
  one 80 GB GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..errors import ConfigError

COUNT_DTYPE = torch.int64
SUM_DTYPE = torch.float64
INT32_TOKENS = 2**31 - 1
#: default tokens per float32 partial sum of :class:`StreamedSums`
FLUSH_TOKENS = 1 << 20
#: default links buffered by :class:`CoactivationGraph` before they are merged into its edge list
COMPACT_EVERY = 1 << 22


class NonFiniteError(ConfigError):
    """Activations hold NaN or inf."""


def count_dtype_for(max_tokens: int | None) -> torch.dtype:
    """int32 when every count (at most the tokens seen) fits it exactly, else int64."""
    return torch.int32 if max_tokens is not None and max_tokens <= INT32_TOKENS else torch.int64


@dataclass
class SparseActs:
    """Active features of each token at one site: ``indices``/``values`` ``[n_tokens, k]``."""

    indices: torch.Tensor  # long
    values: torch.Tensor  # float; 0 marks padding (an inactive slot)
    n_features: int
    #: with ``check_finite=False``: a device bool, whether every activation was finite
    finite: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def from_dense(cls, acts: torch.Tensor, max_active: int | None = None,
                   check_finite: bool = True) -> "SparseActs":
        """Keep the active (> 0) features of ``acts`` ``[n_tokens, n_features]``.

        ``max_active``: a known bound on the active features per token (a TopK SAE's k),
        which saves counting them. ``check_finite=False`` defers the NaN/inf check to the
        caller (``.finite``), saving a host synchronisation per call on a GPU.
        """
        if acts.ndim != 2:
            raise ConfigError(f"need activations [n_tokens, n_features], got {tuple(acts.shape)}")
        n, f = acts.shape
        if max_active is not None:
            k = min(max_active, f)
        else:
            k = int((acts > 0).sum(1).max()) if n else 0
        k = max(k, 1)
        values, indices = torch.topk(acts, k, dim=1, sorted=False)
        # NaN and +inf sort first in topk, so a non-finite activation always lands here
        finite = torch.isfinite(values).all()
        if check_finite and not bool(finite):
            raise NonFiniteError("non-finite (NaN or inf) activations")
        values = torch.where(values > 0, values, torch.zeros_like(values))
        return cls(indices=indices, values=values, n_features=f, finite=None if check_finite else finite)

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(self.n_tokens, self.n_features, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_add_(1, self.indices, self.values)

    def slice(self, start: int, stop: int) -> "SparseActs":
        return SparseActs(self.indices[start:stop], self.values[start:stop], self.n_features, self.finite)


SparseBatch = Mapping[str, SparseActs]


def sparsify(acts: Mapping[str, torch.Tensor]) -> dict[str, SparseActs]:
    """``{site: SparseActs}`` from ``{site: dense [n_tokens, n_features]}``."""
    return {site: SparseActs.from_dense(a) for site, a in acts.items()}


class Accumulator:
    """Interface: ``update``, ``merge``, ``state_dict``, ``load_state_dict``, ``result``.

    ``_state`` names the tensors of the state; ``_children`` names nested
    :class:`StreamedSums`, whose state is saved under ``"<name>.<key>"``.
    """

    _state: tuple[str, ...] = ()
    _children: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {name: getattr(self, name) for name in self._state}
        for child in self._children:
            out.update({f"{child}.{k}": v for k, v in getattr(self, child).state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name in self._state:
            current = getattr(self, name)
            setattr(self, name, state[name].to(device=current.device, dtype=current.dtype).clone())
        for child in self._children:
            prefix = f"{child}."
            getattr(self, child).load_state_dict(
                {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


class StreamedSums(Accumulator):
    """``numel`` float sums over a token stream, added to by index.

    ``dtype=torch.float64``: one float64 tensor on the device.

    ``dtype=torch.float32``: float32 on the device (half the memory), flushed into a
    float64 copy on the host before more than ``flush_tokens`` tokens have been added
    to it, so no float32 partial sum holds more than ``flush_tokens`` terms. Its
    relative rounding error grows with the terms per partial sum: measured by
    ``bench/precision.py`` for an entry that grows on every token of 17.5M, about
    3e-4 at the default 2^20 tokens, 2e-5 at 2^18, 2e-6 at 2^16 (entries that grow
    on fewer tokens do better). A flush copies in chunks, so the host needs no more
    than the float64 copy.
    """

    _state = ("device_sums", "host_sums", "pending")
    FLUSH_CHUNK = 1 << 26

    def __init__(self, numel: int, dtype: torch.dtype = SUM_DTYPE, device="cpu",
                 flush_tokens: int = FLUSH_TOKENS):
        if dtype not in (torch.float64, torch.float32):
            raise ConfigError(f"sums must be float64 or float32, not {dtype}")
        if not 0 < flush_tokens <= 2**24:
            raise ConfigError(f"flush_tokens={flush_tokens} must be in 1..2^24 (float32 partial sums)")
        self.dtype, self.flush_tokens = dtype, flush_tokens
        self.device_sums = torch.zeros(numel, dtype=dtype, device=device)
        self.host_sums = torch.zeros(numel if dtype != torch.float64 else 0, dtype=torch.float64)
        self.pending = torch.zeros((), dtype=torch.int64)  # tokens in the device partial sums

    @property
    def flushed(self) -> bool:
        return self.dtype != torch.float64

    def reserve(self, n_tokens: int) -> None:
        """Call before adding the contributions of ``n_tokens`` tokens."""
        if self.flushed and int(self.pending) + n_tokens > self.flush_tokens:
            self.flush()
        self.pending += n_tokens

    @torch.no_grad()
    def flush(self) -> None:
        """Move the device partial sums into the float64 host copy."""
        if not self.flushed:
            return
        for lo in range(0, self.device_sums.numel(), self.FLUSH_CHUNK):
            part = self.device_sums[lo : lo + self.FLUSH_CHUNK]
            self.host_sums[lo : lo + part.numel()] += part.to("cpu", non_blocking=False).double()
            part.zero_()
        self.pending.zero_()

    def index_add_(self, index: torch.Tensor, values: torch.Tensor) -> None:
        self.device_sums.index_add_(0, index, values.to(self.dtype))

    def merge(self, other: "StreamedSums") -> "StreamedSums":
        if self.flushed:
            self.flush()
            other.flush()
            self.host_sums += other.host_sums
        else:
            self.device_sums += other.device_sums
        return self

    def total(self) -> torch.Tensor:
        """The float64 sums (on the host when flushed, else on the device)."""
        if self.flushed:
            self.flush()
            return self.host_sums
        return self.device_sums


class FeatureStats(Accumulator):
    """Per site and feature: tokens seen, firing count, max activation, sum x, sum x^2."""

    _state = ("n_tokens", "fired", "max", "sum", "sum_sq")

    def __init__(self, sites: Sequence[str], n_features: int, device: torch.device | str = "cpu"):
        self.sites = tuple(sites)
        s, f = len(self.sites), n_features
        self.n_features = f
        self.n_tokens = torch.zeros((), dtype=COUNT_DTYPE, device=device)
        self.fired = torch.zeros(s, f, dtype=COUNT_DTYPE, device=device)
        self.max = torch.zeros(s, f, dtype=torch.float32, device=device)
        self.sum = torch.zeros(s, f, dtype=SUM_DTYPE, device=device)
        self.sum_sq = torch.zeros(s, f, dtype=SUM_DTYPE, device=device)

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        n = None
        for i, site in enumerate(self.sites):
            s = batch[site]
            n = s.n_tokens if n is None else n
            # every slot, padding included: a padding slot (value 0) adds 0 and cannot raise a
            # maximum that starts at 0, and no boolean mask means no wait for the device
            idx, val = s.indices.reshape(-1), s.values.reshape(-1)
            self.fired[i].index_add_(0, idx, (val > 0).to(COUNT_DTYPE))
            self.max[i].scatter_reduce_(0, idx, val.float(), reduce="amax")
            v64 = val.to(SUM_DTYPE)
            self.sum[i].index_add_(0, idx, v64)
            self.sum_sq[i].index_add_(0, idx, v64 * v64)
        self.n_tokens += n or 0

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        self.n_tokens += other.n_tokens
        self.fired += other.fired
        torch.maximum(self.max, other.max, out=self.max)
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        return self

    def result(self) -> dict[str, object]:
        return {
            "n_tokens": int(self.n_tokens),
            "fired": self.fired.cpu().numpy(),
            "max": self.max.cpu().numpy(),
            "sum": self.sum.cpu().numpy(),
            "sum_sq": self.sum_sq.cpu().numpy(),
        }


#: log-binned histogram edges: 8 bins per decade from 1e-4 to 1e4 (float32, as the activations)
HIST_EDGES = torch.logspace(-4, 4, 65, dtype=torch.float64).float()


class ActivationHistogram(Accumulator):
    """Per site and feature: an exact histogram of its non-zero activations on log bins.

    ``counts[s, f, b]`` (int64) counts the tokens where feature ``f`` fired with an activation
    in bin ``b``: bin 0 holds ``(0, edges[0])``, bin ``j`` holds ``[edges[j-1], edges[j])``,
    the last bin ``[edges[-1], inf)``. Bins are found by ``torch.bucketize(..., right=True)``
    on float32 values and edges, i.e. ``numpy.searchsorted(edges, v, side="right")``.
    Padding slots (value 0) add 0: no boolean mask, no wait for the device.
    """

    _state = ("counts",)

    def __init__(self, sites: Sequence[str], n_features: int, device="cpu", edges: torch.Tensor | None = None):
        self.sites, self.n_features = tuple(sites), n_features
        self.edges = (HIST_EDGES if edges is None else edges).float().to(device)
        self.n_bins = self.edges.numel() + 1
        self.counts = torch.zeros(len(self.sites), n_features, self.n_bins, dtype=COUNT_DTYPE, device=device)

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        for i, site in enumerate(self.sites):
            s = batch[site]
            val = s.values.reshape(-1).float()
            bins = torch.bucketize(val, self.edges, right=True)
            flat = s.indices.reshape(-1) * self.n_bins + bins
            self.counts[i].view(-1).index_add_(0, flat, (val > 0).to(COUNT_DTYPE))

    def merge(self, other: "ActivationHistogram") -> "ActivationHistogram":
        self.counts += other.counts
        return self

    def result(self) -> dict[str, object]:
        return {"counts": self.counts.cpu().numpy(), "edges": self.edges.cpu().numpy()}


def _split_for(sums: "StreamedSums", batch: SparseBatch, n: int):
    """Slices of ``batch`` of at most ``flush_tokens`` tokens (the batch itself when it fits)."""
    if not sums.flushed or n <= sums.flush_tokens:
        return None
    return [{s: a.slice(lo, lo + sums.flush_tokens) for s, a in batch.items()}
            for lo in range(0, n, sums.flush_tokens)]


class PairStats(Accumulator):
    """For one pair of sites (L, L+1) and ALL feature pairs (a at L, b at L+1); the sites may be one
    model site read by SAEs of two widths (``n_features`` x ``n_features_b`` pairs):

    ``count[a, b]``: tokens on which both fire (exact; ``count_dtype`` int64, or int32 for
    streams of fewer than 2^31 tokens, see :func:`count_dtype_for`);
    ``sum_xy[a, b]``: sum of the products of their activations (:class:`StreamedSums`).

    Only pairs of active features are touched: the products of all other pairs are 0.
    """

    _state = ("count", "n_tokens")
    _children = ("sum_xy",)

    def __init__(
        self,
        site_a: str,
        site_b: str,
        n_features: int,
        device: torch.device | str = "cpu",
        products: bool = True,
        chunk_pairs: int = 1 << 17,
        count_dtype: torch.dtype = COUNT_DTYPE,
        sum_dtype: torch.dtype = SUM_DTYPE,
        flush_tokens: int = FLUSH_TOKENS,
        n_features_b: int | None = None,
    ):
        self.site_a, self.site_b = site_a, site_b
        self.n_features = n_features
        #: the second site's width (two SAEs of one site: another width; default ``n_features``)
        self.n_features_b = n_features if n_features_b is None else n_features_b
        self.products = products
        self.chunk_pairs = chunk_pairs
        cells = n_features * self.n_features_b
        self.count = torch.zeros(cells, dtype=count_dtype, device=device)
        self.sum_xy = StreamedSums(cells if products else 0, sum_dtype, device, flush_tokens)
        self.n_tokens = torch.zeros((), dtype=torch.int64)  # on the host: guards the int32 counts

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        a, b = batch[self.site_a], batch[self.site_b]
        if a.n_tokens != b.n_tokens:
            raise ConfigError(f"sites {self.site_a!r} and {self.site_b!r} have different token counts")
        parts = _split_for(self.sum_xy, batch, a.n_tokens)
        if parts:
            for part in parts:
                self.update(part)
            return
        self.n_tokens += a.n_tokens
        if self.count.dtype == torch.int32 and int(self.n_tokens) > INT32_TOKENS:
            raise ConfigError(
                f"more than 2^31-1 tokens in int32 pair counts: the stream is longer than announced "
                "(count_dtype_for); use int64 counts"
            )
        self.sum_xy.reserve(a.n_tokens)
        ka, kb = a.indices.shape[1], b.indices.shape[1]
        step = max(1, self.chunk_pairs // max(1, ka * kb))
        f = self.n_features_b
        sum_dtype = self.sum_xy.dtype
        for start in range(0, a.n_tokens, step):
            ia, va = a.indices[start : start + step], a.values[start : start + step]
            ib, vb = b.indices[start : start + step], b.values[start : start + step]
            flat = (ia.unsqueeze(2) * f + ib.unsqueeze(1)).reshape(-1)
            # padding slots (value 0) add 0 to a real entry: cheaper than compacting them away
            both = ((va > 0).unsqueeze(2) & (vb > 0).unsqueeze(1)).reshape(-1)
            self.count.index_add_(0, flat, both.to(self.count.dtype))
            if self.products:
                prod = (va.to(sum_dtype).unsqueeze(2) * vb.to(sum_dtype).unsqueeze(1)).reshape(-1)
                self.sum_xy.index_add_(flat, prod)

    def merge(self, other: "PairStats") -> "PairStats":
        self.count += other.count
        self.n_tokens += other.n_tokens
        if self.products:
            self.sum_xy.merge(other.sum_xy)
        return self

    def result(self) -> dict[str, object]:
        shape = (self.n_features, self.n_features_b)
        out = {"count": self.count.view(shape).cpu().numpy()}
        if self.products:
            out["sum_xy"] = self.sum_xy.total().view(shape).cpu().numpy()
        return out


def pearson(n: int, sum_a, sum_sq_a, sum_b, sum_sq_b, sum_xy):
    """Pearson r of all pairs from streamed moments (numpy, float64).

    NaN where either feature has zero variance (never fired, or constant).
    """
    import numpy as np

    n = float(n)
    cov = n * sum_xy - np.outer(sum_a, sum_b)
    var_a = n * sum_sq_a - sum_a**2
    var_b = n * sum_sq_b - sum_b**2
    denom = np.sqrt(np.outer(np.clip(var_a, 0, None), np.clip(var_b, 0, None)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / denom
    r[denom == 0] = np.nan
    return r


def jaccard(count, fired_a, fired_b):
    """#(both fire) / #(at least one fires); NaN where neither ever fired."""
    import numpy as np

    union = fired_a[:, None] + fired_b[None, :] - count
    with np.errstate(invalid="ignore", divide="ignore"):
        out = count / union
    out[union == 0] = np.nan
    return out


class TopExamples(Accumulator):
    """Per site and feature: the ``k`` highest activations and the ``k`` lowest non-zero ones,
    each with the document id and position of its token (``-1`` / NaN where fewer were seen).

    Ties are broken by the earlier token (smaller doc id, then position) so that results do
    not depend on how the token stream was cut into batches or processes.
    """

    _state = ("hi_val", "hi_doc", "hi_pos", "lo_val", "lo_doc", "lo_pos")

    def __init__(self, sites: Sequence[str], n_features: int, k: int = 20, device="cpu"):
        self.sites, self.n_features, self.k = tuple(sites), n_features, k
        shape = (len(self.sites), n_features, k)
        self.hi_val = torch.full(shape, float("-inf"), device=device)
        self.lo_val = torch.full(shape, float("inf"), device=device)
        for name in ("hi_doc", "hi_pos", "lo_doc", "lo_pos"):
            setattr(self, name, torch.full(shape, -1, dtype=torch.int64, device=device))

    @staticmethod
    def _order_key(doc: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # a total order on tokens; unseen slots (-1) sort last
        big = torch.iinfo(torch.int64).max // 4
        key = doc * (1 << 32) + pos
        return torch.where(doc < 0, torch.full_like(key, big), key)

    def _combine(self, val, doc, pos, descending: bool, in_token_order: bool = False):
        """Keep the best k of ``[F, m]`` candidates per row, ties by token order.

        ``in_token_order``: equal values already appear in token order (true in ``update``,
        where the kept examples precede the new batch), so one stable sort suffices.
        """
        if not in_token_order:
            key = self._order_key(doc, pos)
            order = torch.argsort(key, dim=1, stable=True)  # secondary key first
            val, doc, pos = (t.gather(1, order) for t in (val, doc, pos))
        order = torch.argsort(val, dim=1, descending=descending, stable=True)[:, : self.k]
        return val.gather(1, order), doc.gather(1, order), pos.gather(1, order)

    @torch.no_grad()
    def update(self, batch: SparseBatch, doc_ids: torch.Tensor, positions: torch.Tensor) -> None:
        for i, site in enumerate(self.sites):
            s = batch[site]
            active = s.values > 0
            feat = s.indices[active]
            val = s.values[active].float()
            tok = torch.arange(s.n_tokens, device=feat.device).unsqueeze(1).expand_as(s.indices)[active]
            doc, pos = doc_ids[tok].long(), positions[tok].long()
            for descending in (True, False):
                prefix = "hi" if descending else "lo"
                cur = [getattr(self, f"{prefix}_{n}")[i] for n in ("val", "doc", "pos")]
                # only a value strictly better than a feature's k-th kept one can enter (a tie
                # loses to the kept, earlier token): after the first batches this drops almost all
                kth = cur[0][:, -1][feat]
                keep = val > kth if descending else val < kth
                if not bool(keep.any()):
                    continue
                rows, *cand = self._per_feature(feat[keep], val[keep], doc[keep], pos[keep], descending)
                merged = self._combine(*(torch.cat([c[rows], d], 1) for c, d in zip(cur, cand)), descending,
                                       in_token_order=True)
                for c, t in zip(cur, merged):
                    c[rows] = t

    def _per_feature(self, feat, val, doc, pos, descending: bool):
        """``(rows, val, doc, pos)``: the features with candidates in this batch and their best
        k candidates as ``[len(rows), k]`` tensors (padded with -inf/inf and -1)."""
        k, dev = self.k, feat.device
        # sort by (feature, value, token order); candidates arrive in token order
        o = torch.argsort(val, descending=descending, stable=True)
        feat, val, doc, pos = feat[o], val[o], doc[o], pos[o]
        o = torch.argsort(feat, stable=True)
        feat, val, doc, pos = feat[o], val[o], doc[o], pos[o]
        rows, counts = torch.unique_consecutive(feat, return_counts=True)
        row = torch.repeat_interleave(torch.arange(rows.numel(), device=dev), counts)
        rank = torch.arange(feat.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[row]
        keep = rank < k
        row, rank = row[keep], rank[keep]
        shape = (rows.numel(), k)
        out_val = torch.full(shape, float("-inf") if descending else float("inf"), device=dev)
        out_doc = torch.full(shape, -1, dtype=torch.int64, device=dev)
        out_pos = torch.full(shape, -1, dtype=torch.int64, device=dev)
        out_val[row, rank], out_doc[row, rank], out_pos[row, rank] = val[keep], doc[keep], pos[keep]
        return rows, out_val, out_doc, out_pos

    def merge(self, other: "TopExamples") -> "TopExamples":
        for prefix, descending in (("hi", True), ("lo", False)):
            for i in range(len(self.sites)):
                parts = [
                    torch.cat([getattr(self, f"{prefix}_{n}")[i], getattr(other, f"{prefix}_{n}")[i]], 1)
                    for n in ("val", "doc", "pos")
                ]
                for name, t in zip(("val", "doc", "pos"), self._combine(*parts, descending)):
                    getattr(self, f"{prefix}_{name}")[i] = t
        return self

    def result(self) -> dict[str, object]:
        out = {}
        for prefix in ("hi", "lo"):
            val = getattr(self, f"{prefix}_val").clone()
            val[~torch.isfinite(val)] = float("nan")
            out[f"{prefix}_values"] = val.cpu().numpy()
            out[f"{prefix}_doc"] = getattr(self, f"{prefix}_doc").cpu().numpy().astype("int32")
            out[f"{prefix}_pos"] = getattr(self, f"{prefix}_pos").cpu().numpy().astype("int32")
        return out


def triangle_index(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """Position of the pair ``a < b`` in the row-major upper triangle of an ``n x n`` matrix."""
    return a * (2 * n - a - 1) // 2 + (b - a - 1)


class CoactivationGraph(Accumulator):
    """Within each site: on every token the ``top_k`` most active features are linked pairwise.

    Per edge (a < b): ``edge_count`` = tokens that linked it (exact int64). Edges are few
    (a feature is linked to tens of partners, not thousands), so they are kept as a sorted
    list of keys ``site * F^2 + a * F + b`` with counts: new links are buffered and merged
    into it every ``compact_every`` links.

    An edge's weight is the cosine similarity of the two features' activations over ALL
    tokens seen, from ``sum_xy`` (sums of products of co-active features at the same site,
    every unordered pair once: the upper triangle, ``F (F - 1) / 2`` per site, as
    :class:`StreamedSums`) and the per-feature sums of squares of :class:`FeatureStats`.
    ``weights=False`` keeps the edges and their counts without those sums (the weights are NaN): at
    262k features the triangle alone is 128 GiB per site in float32.
    """

    _state = ("edge_keys", "edge_counts")
    _children = ("sum_xy",)

    def __init__(self, sites: Sequence[str], n_features: int, top_k: int = 4, device="cpu",
                 chunk_pairs: int = 1 << 17, sum_dtype: torch.dtype = SUM_DTYPE,
                 flush_tokens: int = FLUSH_TOKENS, compact_every: int = COMPACT_EVERY, weights: bool = True):
        self.sites, self.n_features, self.top_k = tuple(sites), n_features, top_k
        self.weights = weights
        self.chunk_pairs, self.compact_every = chunk_pairs, compact_every
        s, f = len(self.sites), n_features
        self.tri = f * (f - 1) // 2
        self.edge_keys = torch.zeros(0, dtype=torch.int64, device=device)
        self.edge_counts = torch.zeros(0, dtype=COUNT_DTYPE, device=device)
        self._pending: list[torch.Tensor] = []
        self._pending_n = 0
        # row_start[site, a] + b is the place of pair a < b of that site in sum_xy
        first = torch.arange(f, device=device)
        self.row_start = (torch.arange(s, device=device) * self.tri).unsqueeze(1) + (
            triangle_index(first, first + 1, f) - (first + 1))
        self.sum_xy = StreamedSums(s * self.tri if weights else 0, sum_dtype, device, flush_tokens)

    def _compact(self, extra_keys: torch.Tensor | None = None, extra_counts: torch.Tensor | None = None) -> None:
        """Merge the buffered links (and ``extra`` keys with counts) into the sorted edge list."""
        if not self._pending and extra_keys is None:
            return
        dev = self.edge_keys.device
        keys = [self.edge_keys, *self._pending]
        counts = [self.edge_counts, torch.ones(self._pending_n, dtype=COUNT_DTYPE, device=dev)]
        if extra_keys is not None:
            keys.append(extra_keys.to(dev))
            counts.append(extra_counts.to(device=dev, dtype=COUNT_DTYPE))
        keys, inverse = torch.unique(torch.cat(keys), sorted=True, return_inverse=True)
        counts = torch.zeros(keys.numel(), dtype=COUNT_DTYPE, device=dev).index_add_(0, inverse, torch.cat(counts))
        real = keys >= 0
        self.edge_keys, self.edge_counts = keys[real], counts[real]
        self._pending, self._pending_n = [], 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._compact()
        return super().state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._pending, self._pending_n = [], 0
        super().load_state_dict(state)

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        f = self.n_features
        n = batch[self.sites[0]].n_tokens
        parts = _split_for(self.sum_xy, batch, n)
        if parts:
            for part in parts:
                self.update(part)
            return
        self.sum_xy.reserve(n)
        for i, site in enumerate(self.sites):
            s = batch[site]
            # edges: pairs among the top_k most active features of each token
            k = min(self.top_k, s.indices.shape[1])
            val, order = torch.sort(s.values, dim=1, descending=True, stable=True)
            top_i, top_v = s.indices.gather(1, order[:, :k]), val[:, :k]
            a, b = torch.triu_indices(k, k, offset=1, device=top_i.device)
            ia, ib = top_i[:, a], top_i[:, b]
            ok = (top_v[:, a] > 0) & (top_v[:, b] > 0)
            lo, hi = torch.minimum(ia, ib), torch.maximum(ia, ib)
            keys = torch.where(ok, (i * f + lo) * f + hi, -1).reshape(-1)  # -1: no link, dropped later
            self._pending.append(keys)
            self._pending_n += keys.numel()
            # products of all co-active pairs for the cosine weights: each unordered pair of
            # slots once; with the indices of each token sorted, slot p < q means index a < b and
            # the pair's place in the triangle is row_start[a] + b. Padding slots add 0.
            if not self.weights:
                continue
            kk = s.indices.shape[1]
            sa, sb = torch.triu_indices(kk, kk, offset=1, device=s.indices.device)
            row_start = self.row_start[i]
            step = max(1, self.chunk_pairs // max(1, sa.numel()))
            for start in range(0, s.n_tokens, step):
                idx, order = torch.sort(s.indices[start : start + step], dim=1)
                v = s.values[start : start + step].gather(1, order).to(self.sum_xy.dtype)
                flat = row_start[idx[:, sa]] + idx[:, sb]
                self.sum_xy.index_add_(flat.reshape(-1), (v[:, sa] * v[:, sb]).reshape(-1))
        if self._pending_n >= self.compact_every:
            self._compact()

    def merge(self, other: "CoactivationGraph") -> "CoactivationGraph":
        other._compact()
        self._compact(other.edge_keys, other.edge_counts)
        self.sum_xy.merge(other.sum_xy)
        return self

    def result(self, sum_sq) -> dict[str, object]:
        """Edge list over all sites; ``sum_sq`` is FeatureStats' ``[S, F]`` sums of squares."""
        import numpy as np

        self._compact()
        f = self.n_features
        sums = self.sum_xy.total()  # gathered where they live: never copy all of them
        keys = self.edge_keys.to(sums.device)
        site, rest = keys // (f * f), keys % (f * f)
        a, b = rest // f, rest % f
        norms = torch.as_tensor(np.sqrt(np.asarray(sum_sq, dtype=np.float64)), device=sums.device)
        if self.weights:
            w = (sums[self.row_start.to(sums.device)[site, a] + b] / (norms[site, a] * norms[site, b])).cpu()
        else:
            w = torch.full(keys.shape, float("nan"), dtype=torch.float64)
        site, a, b = site.cpu(), a.cpu(), b.cpu()
        return {
            "edge_site": site.numpy().astype("int16"),
            "edge_src": a.numpy().astype("int32"),
            "edge_dst": b.numpy().astype("int32"),
            "edge_count": self.edge_counts.cpu().numpy(),
            "edge_weight": w.numpy(),
        }
