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

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

#: merge the per-batch (key, count) lists once they hold this many entries
MERGE_ENTRIES = 1 << 22
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
        f = plan.n_features
        self.triples = {p: tuple(torch.as_tensor(x, dtype=torch.long, device=device) for x in t)
                        for p, t in plan.triples.items() if len(t[0])}
        self.tables = {p: torch.zeros(len(t[0]), 8, dtype=torch.long, device=device)
                       for p, t in self.triples.items()}
        # -1 (no candidate) points at an extra column that never fires
        self.upstream = {p: torch.as_tensor(np.where(u < 0, f, u), dtype=torch.long, device=device)
                         for p, u in plan.upstream.items()}
        self.shifts = torch.arange(plan.k, device=device, dtype=torch.long)
        self.keys = {p: torch.zeros(0, dtype=torch.long, device=device) for p in plan.upstream}
        self.counts = {p: torch.zeros(0, dtype=torch.long, device=device) for p in plan.upstream}
        self._pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {p: [] for p in plan.upstream}
        self._pending_entries = {p: 0 for p in plan.upstream}

    @torch.no_grad()
    def update(self, fire: dict[str, torch.Tensor]) -> None:
        """Count one batch: ``fire[site]`` is the ``[n, F]`` boolean firing of the needed sites."""
        sites = self.plan.sites
        self.n_tokens += int(next(iter(fire.values())).shape[0])
        for p, (a1, a2, b) in self.triples.items():
            fa, fb = fire[sites[p]], fire[sites[p + 1]]
            n, c = fa.shape[0], len(b)
            step = max(1, CODES_PER_CALL // max(n, 1))
            for lo in range(0, c, step):
                s = slice(lo, lo + step)
                code = (fa[:, a1[s]].long() << 2) | (fa[:, a2[s]].long() << 1) | fb[:, b[s]].long()
                code = code + 8 * torch.arange(code.shape[1], device=code.device)
                self.tables[p][s] += torch.bincount(code.flatten(), minlength=8 * code.shape[1]).view(-1, 8)
        for p, up in self.upstream.items():
            fa, fb = fire[sites[p]], fire[sites[p + 1]]
            tok, feat = torch.nonzero(fb, as_tuple=True)
            padded = torch.cat([fa, torch.zeros(fa.shape[0], 1, dtype=torch.bool, device=fa.device)], 1)
            bits = padded[tok.unsqueeze(1), up[feat]]  # [E, K]: which candidates of b fire with it
            keys = (feat << self.plan.k) | (bits.long() << self.shifts).sum(1)
            uniq, cnt = torch.unique(keys, return_counts=True)
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


@torch.no_grad()
def firing(subject, saes: dict, sites: tuple[str, ...], batch) -> dict[str, torch.Tensor]:
    """``{site: [n, F] bool}``: which features fire on the counted tokens of ``batch``, encoded
    as the statistics pass encodes them (:func:`~helpers.stats.collect.encode_batch`), for
    ``sites`` only; the forward pass stops after the last of them."""
    from ..subject.capture import capture_residuals

    acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, sites)
    mask = batch.token_mask.to(subject.device)
    out = {}
    for site in sites:
        x = acts[site][mask]
        out[site] = saes[site].encode(x.to(saes[site].W_enc.dtype)) > 0
    return out


def run_focused_pass(exp, plan: FocusPlan, subject, saes: dict, progress: bool = True) -> tuple[dict, float]:
    """Run the focused pass of ``plan`` over the experiment's token stream: ``(result, seconds)``."""
    from ..subject.corpus import iter_token_batches, load_corpus

    sites = plan.needed_sites()
    counts = FocusedCounts(plan, subject.device)
    t0 = time.perf_counter()
    if sites:
        docs = load_corpus(exp.corpus, exp.max_documents)
        stream = iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                    exp.batch_size, exp.token_budget)
        bar = tqdm(total=exp.token_budget, unit="tok", desc=f"gate verification ({exp.name})",
                   disable=not progress)
        for batch in stream:
            counts.update(firing(subject, saes, sites, batch))
            bar.update(batch.n_tokens)
        bar.close()
    result = counts.result()
    return result, time.perf_counter() - t0
