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

Precision:

- counts (firings, co-activations) are exact int64 integers;
- sums of activations, of squares and of products are float64 (relative error
  about 1e-16 per addition, so about 1e-9 after 10^7 tokens at worst).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .errors import ConfigError

COUNT_DTYPE = torch.int64


class NonFiniteError(ConfigError):
    """Activations hold NaN or inf."""

SUM_DTYPE = torch.float64


@dataclass
class SparseActs:
    """Active features of each token at one site: ``indices``/``values`` ``[n_tokens, k]``."""

    indices: torch.Tensor  # long
    values: torch.Tensor  # float; 0 marks padding (an inactive slot)
    n_features: int

    @property
    def n_tokens(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def from_dense(cls, acts: torch.Tensor, max_active: int | None = None) -> "SparseActs":
        """Keep the active (> 0) features of ``acts`` ``[n_tokens, n_features]``.

        ``max_active``: a known bound on the active features per token (a TopK SAE's k),
        which saves counting them.
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
        if not torch.isfinite(values).all():
            raise NonFiniteError("non-finite (NaN or inf) activations")
        values = torch.where(values > 0, values, torch.zeros_like(values))
        return cls(indices=indices, values=values, n_features=f)

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(self.n_tokens, self.n_features, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_add_(1, self.indices, self.values)

    def slice(self, start: int, stop: int) -> "SparseActs":
        return SparseActs(self.indices[start:stop], self.values[start:stop], self.n_features)


SparseBatch = Mapping[str, SparseActs]


def sparsify(acts: Mapping[str, torch.Tensor]) -> dict[str, SparseActs]:
    """``{site: SparseActs}`` from ``{site: dense [n_tokens, n_features]}``."""
    return {site: SparseActs.from_dense(a) for site, a in acts.items()}


class Accumulator:
    """Interface: ``update``, ``merge``, ``state_dict``, ``load_state_dict``, ``result``."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._state}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name in self._state:
            current = getattr(self, name)
            setattr(self, name, state[name].to(device=current.device, dtype=current.dtype).clone())

    _state: tuple[str, ...] = ()


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
            active = s.values > 0
            idx = s.indices[active]
            val = s.values[active]
            self.fired[i].index_add_(0, idx, torch.ones_like(idx, dtype=COUNT_DTYPE))
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


class PairStats(Accumulator):
    """For one pair of sites (L, L+1) and ALL feature pairs (a at L, b at L+1):

    ``count[a, b]``: tokens on which both fire (exact int64);
    ``sum_xy[a, b]``: sum of the products of their activations (float64).

    Only pairs of active features are touched: the products of all other pairs are 0.
    """

    _state = ("count", "sum_xy")

    def __init__(
        self,
        site_a: str,
        site_b: str,
        n_features: int,
        device: torch.device | str = "cpu",
        products: bool = True,
        chunk_pairs: int = 1 << 17,
    ):
        self.site_a, self.site_b = site_a, site_b
        self.n_features = n_features
        self.products = products
        self.chunk_pairs = chunk_pairs
        f = n_features
        self.count = torch.zeros(f * f, dtype=COUNT_DTYPE, device=device)
        self.sum_xy = torch.zeros(f * f if products else 0, dtype=SUM_DTYPE, device=device)

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        a, b = batch[self.site_a], batch[self.site_b]
        if a.n_tokens != b.n_tokens:
            raise ConfigError(f"sites {self.site_a!r} and {self.site_b!r} have different token counts")
        ka, kb = a.indices.shape[1], b.indices.shape[1]
        step = max(1, self.chunk_pairs // max(1, ka * kb))
        f = self.n_features
        for start in range(0, a.n_tokens, step):
            ia, va = a.indices[start : start + step], a.values[start : start + step]
            ib, vb = b.indices[start : start + step], b.values[start : start + step]
            flat = (ia.unsqueeze(2) * f + ib.unsqueeze(1)).reshape(-1)
            # padding slots (value 0) add 0 to a real entry: cheaper than compacting them away
            both = ((va > 0).unsqueeze(2) & (vb > 0).unsqueeze(1)).reshape(-1)
            self.count.index_add_(0, flat, both.to(COUNT_DTYPE))
            if self.products:
                prod = (va.to(SUM_DTYPE).unsqueeze(2) * vb.to(SUM_DTYPE).unsqueeze(1)).reshape(-1)
                self.sum_xy.index_add_(0, flat, prod)

    def merge(self, other: "PairStats") -> "PairStats":
        self.count += other.count
        if self.products:
            self.sum_xy += other.sum_xy
        return self

    def result(self) -> dict[str, object]:
        f = self.n_features
        out = {"count": self.count.view(f, f).cpu().numpy()}
        if self.products:
            out["sum_xy"] = self.sum_xy.view(f, f).cpu().numpy()
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
                cand = self._per_feature(feat, val, doc, pos, descending)
                prefix = "hi" if descending else "lo"
                cur = [getattr(self, f"{prefix}_{n}")[i] for n in ("val", "doc", "pos")]
                merged = self._combine(*(torch.cat([c, d], 1) for c, d in zip(cur, cand)), descending,
                                       in_token_order=True)
                for name, t in zip(("val", "doc", "pos"), merged):
                    getattr(self, f"{prefix}_{name}")[i] = t

    def _per_feature(self, feat, val, doc, pos, descending: bool):
        """The best k candidates of each feature in this batch, as ``[F, k]`` tensors."""
        f, k, dev = self.n_features, self.k, feat.device
        fill = float("-inf") if descending else float("inf")
        out_val = torch.full((f, k), fill, device=dev)
        out_doc = torch.full((f, k), -1, dtype=torch.int64, device=dev)
        out_pos = torch.full((f, k), -1, dtype=torch.int64, device=dev)
        if feat.numel() == 0:
            return out_val, out_doc, out_pos
        # sort by (feature, value, token order); candidates arrive in token order
        o = torch.argsort(val, descending=descending, stable=True)
        feat, val, doc, pos = feat[o], val[o], doc[o], pos[o]
        o = torch.argsort(feat, stable=True)
        feat, val, doc, pos = feat[o], val[o], doc[o], pos[o]
        counts = torch.bincount(feat, minlength=f)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(feat.numel(), device=dev) - starts[feat]
        keep = rank < k
        out_val[feat[keep], rank[keep]] = val[keep]
        out_doc[feat[keep], rank[keep]] = doc[keep]
        out_pos[feat[keep], rank[keep]] = pos[keep]
        return out_val, out_doc, out_pos

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


class CoactivationGraph(Accumulator):
    """Within each site: on every token the ``top_k`` most active features are linked pairwise.

    Per edge (a < b): ``edge_count`` = tokens that linked it (exact int64). Its weight is the
    cosine similarity of the two features' activations over ALL tokens seen, from
    ``sum_xy`` (float64 sums of products of co-active features at the same site) and the
    per-feature sums of squares of :class:`FeatureStats`.
    """

    _state = ("edge_count", "sum_xy")

    def __init__(self, sites: Sequence[str], n_features: int, top_k: int = 4, device="cpu",
                 chunk_pairs: int = 1 << 17):
        self.sites, self.n_features, self.top_k = tuple(sites), n_features, top_k
        self.chunk_pairs = chunk_pairs
        s, f = len(self.sites), n_features
        self.edge_count = torch.zeros(s, f * f, dtype=COUNT_DTYPE, device=device)
        self.sum_xy = torch.zeros(s, f * f, dtype=SUM_DTYPE, device=device)

    @torch.no_grad()
    def update(self, batch: SparseBatch) -> None:
        f = self.n_features
        for i, site in enumerate(self.sites):
            s = batch[site]
            # edges: pairs among the top_k most active features of each token
            k = min(self.top_k, s.indices.shape[1])
            val, order = torch.sort(s.values, dim=1, descending=True, stable=True)
            top_i, top_v = s.indices.gather(1, order[:, :k]), val[:, :k]
            a, b = torch.triu_indices(k, k, offset=1, device=top_i.device)
            ia, ib = top_i[:, a], top_i[:, b]
            ok = (top_v[:, a] > 0) & (top_v[:, b] > 0)
            lo, hi = torch.minimum(ia, ib)[ok], torch.maximum(ia, ib)[ok]
            flat = lo * f + hi
            self.edge_count[i].index_add_(0, flat, torch.ones_like(flat))
            # products of all co-active pairs for the cosine weights: each unordered pair of
            # slots once, stored at (min, max); padding slots have value 0 and add 0
            kk = s.indices.shape[1]
            sa, sb = torch.triu_indices(kk, kk, offset=1, device=s.indices.device)
            step = max(1, self.chunk_pairs // max(1, sa.numel()))
            for start in range(0, s.n_tokens, step):
                idx, v = s.indices[start : start + step], s.values[start : start + step].to(SUM_DTYPE)
                pa, pb = idx[:, sa], idx[:, sb]
                flat = (torch.minimum(pa, pb) * f + torch.maximum(pa, pb)).reshape(-1)
                self.sum_xy[i].index_add_(0, flat, (v[:, sa] * v[:, sb]).reshape(-1))

    def merge(self, other: "CoactivationGraph") -> "CoactivationGraph":
        self.edge_count += other.edge_count
        self.sum_xy += other.sum_xy
        return self

    def result(self, sum_sq) -> dict[str, object]:
        """Edge list over all sites; ``sum_sq`` is FeatureStats' ``[S, F]`` sums of squares."""
        import numpy as np

        f = self.n_features
        site, src, dst, count, weight = [], [], [], [], []
        for i in range(len(self.sites)):
            flat = torch.nonzero(self.edge_count[i]).flatten()
            a, b = flat // f, flat % f
            norms = torch.as_tensor(np.sqrt(sum_sq[i]), device=flat.device)
            w = self.sum_xy[i][flat] / (norms[a] * norms[b])
            site.append(torch.full_like(a, i)); src.append(a); dst.append(b)
            count.append(self.edge_count[i][flat]); weight.append(w)
        cat = lambda xs: torch.cat(xs).cpu().numpy()  # noqa: E731
        return {
            "edge_site": cat(site).astype("int16"),
            "edge_src": cat(src).astype("int32"),
            "edge_dst": cat(dst).astype("int32"),
            "edge_count": cat(count),
            "edge_weight": cat(weight),
        }
