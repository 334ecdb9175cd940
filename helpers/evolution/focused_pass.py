"""The focused second pass: truth tables of gate candidates and firing masks of upstream sets.

It reads the same token stream with the same batching as the statistics pass
(:func:`~helpers.subject.corpus.iter_token_batches`, ``exp.batch_size``), captures only the
sites it needs (the trace stops after the last one) and encodes only those. Per batch, on the
device and without per-token Python:

- **truth tables**: for the candidate triples ``(a1, a2, b)`` of each adjacent pair, the pattern
  code ``4 a1 + 2 a2 + b`` of every token and one ``bincount`` over ``code + 8 * triple``;
- **firing masks**: for every firing ``(token, b)`` at site L+1, the bitmask of which of ``b``'s
  ``K`` upstream candidates fire at site L, counted per key ``b * 2^K + mask`` (a sorted list of
  distinct keys with counts, merged every few batches; never a dense ``[F, 2^K]``).

A feature fires when its SAE activation is > 0, as in the statistics pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: merge the per-batch (key, count) lists once they hold this many entries
MERGE_ENTRIES = 1 << 23
#: at most this many (token, triple) codes per bincount call
CODES_PER_CALL = 1 << 24


@dataclass
class FocusPlan:
    """What the pass counts, per adjacent pair ``p`` (index into ``exp.site_pairs``)."""

    sites: tuple[str, ...]  # every site of the experiment, forward order
    n_features: int
    #: ``{p: (a1, a2, b)}`` int64 arrays of the candidate triples of pair p
    triples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: ``{p: [Fb, K]}`` upstream candidates of every feature of site p+1 (-1: none)
    upstream: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return next(iter(self.upstream.values())).shape[1] if self.upstream else 0

    def needed_sites(self) -> tuple[str, ...]:
        """Only the sites some count reads, in forward order."""
        used = set()
        for p, t in self.triples.items():
            if len(t[0]):
                used |= {p, p + 1}
        for p in self.upstream:
            used |= {p, p + 1}
        return tuple(s for i, s in enumerate(self.sites) if i in used)


class FocusedCounts:
    """The accumulators of the focused pass (on the device)."""

    def __init__(self, plan: FocusPlan, device: torch.device):
        self.plan, self.device = plan, device
        self.n_tokens = 0
        self.triples = {p: tuple(torch.as_tensor(x, dtype=torch.long, device=device) for x in t)
                        for p, t in plan.triples.items() if len(t[0])}
        self.tables = {p: torch.zeros(len(t[0]), 8, dtype=torch.long, device=device)
                       for p, t in self.triples.items()}
        self.offsets = 8 * torch.arange(max((len(t[0]) for t in self.triples.values()), default=0),
                                        dtype=torch.int32, device=device)
        # a missing candidate (-1) reads column 0 and is masked out by ``valid``
        self.shifts = torch.arange(plan.k, device=device, dtype=torch.long)
        self.upstream = {p: torch.as_tensor(np.maximum(u, 0), dtype=torch.long, device=device)
                         for p, u in plan.upstream.items()}
        self.valid = {p: ((torch.as_tensor(u, device=device) >= 0).long() << self.shifts).sum(1)
                      for p, u in plan.upstream.items()}
        # bit weights for packing a row of K bits by a float64 matrix product (exact up to 2^53)
        self.weights = (torch.ones(plan.k, dtype=torch.float64, device=device) * 2) ** self.shifts.double()
        self.keys = {p: torch.zeros(0, dtype=torch.long, device=device) for p in plan.upstream}
        self.counts = {p: torch.zeros(0, dtype=torch.long, device=device) for p in plan.upstream}
        self._pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {p: [] for p in plan.upstream}
        self._pending_entries = {p: 0 for p in plan.upstream}

    @torch.no_grad()
    def update(self, fire: dict[str, "SiteFiring"]) -> None:
        """Count one batch: ``fire[site]`` is the firing of each needed site."""
        sites = self.plan.sites
        self.n_tokens += int(next(iter(fire.values())).dense.shape[0])
        for p, (a1, a2, b) in self.triples.items():
            fa = fire[sites[p]].dense.view(torch.uint8)
            fb = fire[sites[p + 1]].dense.view(torch.uint8)
            n, c = fa.shape[0], len(b)
            step = max(1, CODES_PER_CALL // max(n, 1))
            for lo in range(0, c, step):
                s = slice(lo, lo + step)
                # pattern code 4 a1 + 2 a2 + b of every (token, triple), offset by 8 x triple
                code = (fa.index_select(1, a1[s]) * 4 + fa.index_select(1, a2[s]) * 2
                        + fb.index_select(1, b[s])).to(torch.int32)
                code += self.offsets[: code.shape[1]]
                self.tables[p][s] += torch.bincount(code.flatten(), minlength=8 * code.shape[1]).view(-1, 8)
        for p, up in self.upstream.items():
            fa, down = fire[sites[p]].dense, fire[sites[p + 1]]
            f = fa.shape[1]
            tok, feat = down.tok, down.feat  # every firing (token, b) at site p+1
            flat = up.index_select(0, feat).add_((tok * f).unsqueeze(1))  # [E, K] into fa.flatten()
            bits = torch.take(fa, flat)  # which candidates of b fire on that token
            mask = (bits.double() @ self.weights).long() & self.valid[p].index_select(0, feat)
            uniq, cnt = torch.unique((feat << self.plan.k) | mask, return_counts=True)
            self._pending[p].append((uniq, cnt))
            self._pending_entries[p] += len(uniq)
            if self._pending_entries[p] >= MERGE_ENTRIES:
                self._merge(p)

    def _merge(self, p: int) -> None:
        keys = torch.cat([self.keys[p]] + [k for k, _ in self._pending[p]])
        counts = torch.cat([self.counts[p]] + [c for _, c in self._pending[p]])
        uniq, inverse = torch.unique(keys, return_inverse=True)  # sorted
        self.keys[p] = uniq
        self.counts[p] = torch.zeros(len(uniq), dtype=torch.long, device=keys.device).index_add_(0, inverse, counts)
        self._pending[p], self._pending_entries[p] = [], 0

    def result(self) -> dict[str, object]:
        for p in self.upstream:
            self._merge(p)
        return {
            "tables": {p: t.cpu().numpy() for p, t in self.tables.items()},
            "keys": {p: k.cpu().numpy() for p, k in self.keys.items()},
            "counts": {p: c.cpu().numpy() for p, c in self.counts.items()},
            "n_tokens": self.n_tokens,
        }


@dataclass
class SiteFiring:
    """Which features fire on the counted tokens of a batch at one site."""

    dense: torch.Tensor  # [n, F] bool
    tok: torch.Tensor  # [E] token of each firing
    feat: torch.Tensor  # [E] feature of each firing


def _is_plain_topk(sae) -> bool:
    """Whether ``sae.encode`` is sae_lens' TopK encode (pre-activations, ``torch.topk``, ReLU)."""
    try:
        from sae_lens import TopKSAE
        from sae_lens.saes.topk_sae import TopK
    except ImportError:  # pragma: no cover
        return False
    return type(sae).encode is TopKSAE.encode and type(sae.activation_fn) is TopK \
        and not getattr(sae.activation_fn, "use_sparse_activations", False)


def _topk_firing(sae, x: torch.Tensor) -> SiteFiring:
    """The firing of a TopK SAE without its dense output: the same pre-activations and the same
    ``torch.topk`` call as ``TopKSAE.encode``, so the same features fire (checked once per run)."""
    hidden_pre = sae.hook_sae_acts_pre(sae.process_sae_in(x) @ sae.W_enc + sae.b_enc)
    if sae.cfg.rescale_acts_by_decoder_norm:
        hidden_pre = hidden_pre * sae.W_dec.norm(dim=-1)
    values, indices = torch.topk(hidden_pre, k=sae.activation_fn.k, dim=-1, sorted=False)
    fires = values > 0  # ReLU after the top k
    n, f = hidden_pre.shape
    dense = torch.zeros(n, f, dtype=torch.bool, device=x.device).scatter_(1, indices, fires)
    keep = fires.flatten()
    tok = torch.arange(n, device=x.device).repeat_interleave(indices.shape[1])[keep]
    return SiteFiring(dense, tok, indices.flatten()[keep])


def recorded_firing(acts) -> SiteFiring:
    """The firing of one site from the statistics pass's recorded codes (a padded ``SparseActs``:
    padding slots hold 0, so only slots with an activation > 0 fire)."""
    tok, slot = torch.nonzero(acts.values > 0, as_tuple=True)
    feat = acts.indices[tok, slot]
    dense = torch.zeros(acts.n_tokens, acts.n_features, dtype=torch.bool, device=acts.values.device)
    dense[tok, feat] = True
    return SiteFiring(dense, tok, feat)


def _dense_firing(sae, x: torch.Tensor) -> SiteFiring:
    dense = sae.encode(x) > 0
    active = torch.nonzero(dense.view(torch.uint8))
    return SiteFiring(dense, active[:, 0], active[:, 1])


@torch.no_grad()
def firing(subject, saes: dict, sites: tuple[str, ...], batch, fast: dict[str, bool] | None = None,
           check: bool = False) -> dict[str, SiteFiring]:
    """``{site: SiteFiring}`` on the counted tokens of ``batch``, for ``sites`` only (the forward
    pass stops after the last of them), encoded as the statistics pass encodes them
    (:func:`~helpers.stats.collect.encode_batch`).

    ``fast[site]``: use the TopK shortcut; with ``check`` it is compared with ``sae.encode`` on
    this batch and turned off (in ``fast``, with a warning) where they differ.
    """
    from ..subject.capture import capture_residuals

    acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, sites)
    mask = batch.token_mask.to(subject.device)
    fast = fast if fast is not None else {}
    out = {}
    for site in sites:
        sae = saes[site]
        x = acts[site][mask].to(sae.W_enc.dtype)
        out[site] = _topk_firing(sae, x) if fast.get(site) else _dense_firing(sae, x)
        if check and fast.get(site):
            dense = _dense_firing(sae, x)
            if not torch.equal(out[site].dense, dense.dense):
                log.warning("site %s: the TopK shortcut disagrees with sae.encode; using the dense encode", site)
                fast[site], out[site] = False, dense
    return out


def fast_path(saes: dict, sites: tuple[str, ...]) -> dict[str, bool]:
    """Per site, whether the TopK shortcut may apply (to be checked on a first batch)."""
    return {s: _is_plain_topk(saes[s]) for s in sites}


def run_focused_pass(exp, plan: FocusPlan, subject, saes: dict, progress: bool = True, codes=None,
                     device: torch.device | str | None = None) -> tuple[dict, float]:
    """Run the focused pass of ``plan`` over the experiment's token stream: ``(result, seconds)``.

    ``codes`` (a :class:`~helpers.stats.codes.CodeCache`): read the firing from the codes the
    statistics pass recorded, batch by batch, instead of running the model (``subject`` and
    ``saes`` are then unused and may be ``None``).
    """
    from ..subject.corpus import iter_token_batches, stream_documents

    sites = plan.needed_sites()
    device = torch.device(device) if device is not None else (subject.device if subject is not None else "cpu")
    counts = FocusedCounts(plan, device)
    t0 = time.perf_counter()
    if sites and codes is not None:
        bar = tqdm(total=int(codes.token_start[-1]), unit="tok", desc=f"gate verification ({exp.name}, recorded codes)",
                   disable=not progress)
        for b in range(codes.n_batches):
            acts = codes.batch(b, sites=sites)
            counts.update({s: recorded_firing(a) for s, a in acts.items()})
            bar.update(int(codes.batch_tokens[b]))
        bar.close()
    elif sites:
        docs = stream_documents(exp)
        stream = iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                    exp.batch_size, exp.token_budget)
        bar = tqdm(total=exp.token_budget, unit="tok", desc=f"gate verification ({exp.name})",
                   disable=not progress)
        fast = fast_path(saes, sites)
        for i, batch in enumerate(stream):
            counts.update(firing(subject, saes, sites, batch, fast, check=i == 0))
            bar.update(batch.n_tokens)
        bar.close()
    result = counts.result()
    return result, time.perf_counter() - t0
