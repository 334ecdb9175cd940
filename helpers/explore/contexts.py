"""Every example's context coloured by activations: the example windows re-run through the model.

The statistics pass keeps, for every feature, its 20 highest and 20 lowest non-zero examples
as (document, position). To colour the ~12 tokens on each side of every example by the
feature's activation (and by a few partner features), :func:`example_contexts` re-runs the
batches of the token stream that hold an example row, **batched exactly as the pass batched
them** (same rows, same padding), so that TopK SAEs pick the same features even where two
pre-activations tie. Batches without any example row are skipped (tokenized, never run).
Contexts stop at the edges of the example's row (the window the model saw).

Every ``heldout_every``-th batch is also run in full: its tokens are held out for scoring
the token labels (:func:`label_scores`), which are chosen from the examples of the other batches.

Cost: when the statistics pass recorded every token's codes (``codes/`` beside the statistics,
:mod:`helpers.stats.codes`), the batches are read from that record: no model run, only the
corpus's tokenization. Otherwise one model forward pass and one encode per site for every batch
run: on the offline preset almost every batch holds an example, so this is about one forward pass
over the corpus (``bench/explorer.py`` reports it separately from building the pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..experiment import Experiment

CONTEXT = 12


@dataclass
class Examples:
    """All examples of all sites, one row each (``E`` rows), in stream order.

    ``ids``/``acts``/``ok`` are ``[E, 2 * context + 1]``: the context tokens, this feature's
    activation on each, and whether the slot is inside the example's row (slot ``context`` is
    the example token). ``partner_acts`` ``[E, R, W]`` are the activations of the partner
    features ``partner_feature`` ``[E, R]`` (at ``partner_site`` ``[R]`` relative offsets).
    """

    site: np.ndarray
    feature: np.ndarray
    kind: np.ndarray  # 0: among the highest, 1: among the lowest non-zero
    rank: np.ndarray
    doc: np.ndarray
    pos: np.ndarray
    value: np.ndarray
    batch: np.ndarray
    ids: np.ndarray | None = None
    acts: np.ndarray | None = None
    ok: np.ndarray | None = None
    partner_feature: np.ndarray | None = None
    partner_offset: tuple[int, ...] = ()
    partner_acts: np.ndarray | None = None
    batches_run: int = 0
    tokens_run: int = 0
    from_codes: bool = False
    heldout: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.site.size)


def flatten_examples(top: dict[str, np.ndarray]) -> Examples:
    """One row per recorded example of every site and feature (hi then lo, best first)."""
    parts = []
    for kind, prefix in enumerate(("hi", "lo")):
        doc = top[f"{prefix}_doc"]
        s, f, r = np.nonzero(doc >= 0)
        parts.append((s, f, np.full(s.size, kind), r, doc[s, f, r], top[f"{prefix}_pos"][s, f, r],
                      top[f"{prefix}_values"][s, f, r]))
    cols = [np.concatenate(c) for c in zip(*parts)]
    site, feature, kind, rank, doc, pos, value = cols
    order = np.lexsort((rank, kind, feature, site))
    return Examples(site[order].astype(np.int32), feature[order].astype(np.int32), kind[order].astype(np.int8),
                    rank[order].astype(np.int8), doc[order].astype(np.int64), pos[order].astype(np.int64),
                    value[order].astype(np.float32), batch=np.zeros(0, dtype=np.int64))


def stream_layout(exp: Experiment, docs, tokenizer, special) -> tuple[dict[int, np.ndarray], np.ndarray, int]:
    """``(doc tokens, first row of each doc, window)``: where each token sits in the pass's stream."""
    from ..subject.corpus import tokenize_documents

    window = exp.context_length - len(special.prefix) - len(special.suffix)
    tokens = {d.doc_id: np.asarray(ids, dtype=np.int64) for d, ids in tokenize_documents(docs, tokenizer)}
    n_docs = max(tokens) + 1 if tokens else 0
    rows = np.zeros(n_docs, dtype=np.int64)
    for d, ids in tokens.items():
        rows[d] = -(-len(ids) // window)
    first_row = np.concatenate([[0], np.cumsum(rows)[:-1]]) if n_docs else rows
    return tokens, first_row, window


def locate(exp: Experiment, ex: Examples, tokens: dict[int, np.ndarray], first_row: np.ndarray,
           window: int) -> None:
    """Set ``ex.batch``: the batch of the pass that held each example's token."""
    lengths = np.zeros(first_row.size, dtype=np.int64)
    for d, ids in tokens.items():
        lengths[d] = ids.size
    if ex.n and (ex.doc.max() >= first_row.size or (ex.pos >= lengths[ex.doc]).any()):
        raise ConfigError("an example points outside the corpus's documents: the statistics were collected "
                          f"on another corpus; rerun `python -m helpers collect --experiment {exp.name}`")
    ex.batch = (first_row[ex.doc] + ex.pos // window) // exp.batch_size


def _lookup(dense: torch.Tensor, tok: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """Activation of feature ``feat`` ``[E]`` at tokens ``tok`` ``[E, W]`` of a dense ``[n, F]``."""
    return dense[tok, feat.unsqueeze(1)]


@torch.no_grad()
def example_contexts(exp: Experiment, subject, saes: dict, examples: Examples,
                     partner_feature: np.ndarray | None = None, partner_offset: tuple[int, ...] = (),
                     labels: np.ndarray | None = None, context: int = CONTEXT, heldout_every: int = 5,
                     docs=None, progress: bool = False, codes=None) -> Examples:
    """Fill ``examples`` with context ids and activations (see :class:`Examples`).

    ``partner_feature`` ``[E, R]`` (-1: none) and ``partner_offset`` (site offset of each of the
    R partner slots, e.g. ``(-1, -1, 1, 1)``): partner activations on the same contexts.
    ``labels`` ``[S, F]`` (token ids, -1: none): counted on the held-out batches (see
    :func:`label_scores`).
    ``codes`` (a :class:`~helpers.stats.codes.CodeCache`): read each batch's activations from the
    codes the statistics pass recorded instead of running the model (the same numbers: the pass's).
    """
    from tqdm.auto import tqdm

    from ..stats.collect import encode_batch
    from ..subject.corpus import iter_token_batches, stream_documents

    docs = docs if docs is not None else stream_documents(exp)
    special = subject.special_tokens
    ex = examples
    if ex.batch.size != ex.n:
        locate(exp, ex, *stream_layout(exp, docs, subject.tokenizer, special))
    W = 2 * context + 1
    E = ex.n
    ex.ids = np.full((E, W), -1, dtype=np.int64)
    ex.acts = np.zeros((E, W), dtype=np.float32)
    ex.ok = np.zeros((E, W), dtype=bool)
    R = 0 if partner_feature is None else partner_feature.shape[1]
    ex.partner_feature, ex.partner_offset = partner_feature, tuple(partner_offset)
    ex.partner_acts = np.zeros((E, R, W), dtype=np.float32)
    ex.from_codes = codes is not None
    S = len(exp.sites)
    F = exp.sae_width
    held = {"tp": np.zeros((S, F), np.int64), "fires": np.zeros((S, F), np.int64),
            "present": np.zeros((S, F), np.int64), "tokens": 0}
    order = np.argsort(ex.batch, kind="stable")
    bounds = np.searchsorted(ex.batch[order], np.arange(int(ex.batch.max(initial=-1)) + 2))
    wanted = set(np.unique(ex.batch).tolist())
    offsets = torch.arange(-context, context + 1)
    stream = iter_token_batches(docs, subject.tokenizer, special, exp.context_length, exp.batch_size,
                                exp.token_budget)
    for b, batch in enumerate(tqdm(stream, desc="example contexts", unit="batch", disable=not progress)):
        is_held = heldout_every > 0 and b % heldout_every == heldout_every - 1
        if b not in wanted and not is_held:
            continue
        if codes is not None:  # the pass's own codes of this batch: no model run
            try:
                acts = codes.batch(b, batch.n_tokens)
            except ValueError as e:
                raise ConfigError(f"the recorded SAE codes do not match the token stream ({e}): rerun "
                                  f"`python -m helpers collect --experiment {exp.name}`") from None
            doc, pos = batch.doc_ids[batch.token_mask], batch.positions[batch.token_mask]
        else:
            acts, doc, pos = encode_batch(subject, saes, exp, batch, b)
        ex.batches_run += 1
        ex.tokens_run += int(doc.numel())
        key = doc.long().cpu() * (1 << 32) + pos.long().cpu()  # increasing: the stream's order
        row_of = torch.nonzero(batch.token_mask)[:, 0]
        ids = batch.input_ids[batch.token_mask]
        if is_held and labels is not None:
            _count_heldout(held, acts, exp.sites, ids.numpy(), labels)
        if b >= len(bounds) - 1 or bounds[b] == bounds[b + 1]:
            continue
        sel = order[bounds[b] : bounds[b + 1]]
        target = torch.as_tensor(ex.doc[sel] * (1 << 32) + ex.pos[sel]).unsqueeze(1) + offsets
        j = torch.searchsorted(key, target).clamp_max(key.numel() - 1)
        centre = j[:, context : context + 1]
        if not bool((key[centre.squeeze(1)] == target[:, context]).all()):
            raise ConfigError("an example token is not where the statistics say: rerun `python -m helpers "
                              f"collect --experiment {exp.name}` (the corpus or tokenizer changed)")
        ok = (key[j] == target) & (row_of[j] == row_of[centre])
        ex.ok[sel] = ok.numpy()
        ex.ids[sel] = torch.where(ok, ids[j], -1).numpy()
        site_of = ex.site[sel]
        dense = {}
        for s_i, site in enumerate(exp.sites):
            mine_np = site_of == s_i
            if not mine_np.any():
                continue
            mine = torch.as_tensor(mine_np)
            rows = sel[mine_np]
            jj, okm = j[mine], ok[mine]
            for other in {s_i, *(s_i + o for o in ex.partner_offset if 0 <= s_i + o < S)}:
                if other not in dense:
                    dense[other] = acts[exp.sites[other]].to_dense().cpu()
            feat = torch.as_tensor(ex.feature[rows], dtype=torch.long)
            ex.acts[rows] = torch.where(okm, _lookup(dense[s_i], jj, feat), 0).numpy()
            for r, off in enumerate(ex.partner_offset):
                other = s_i + off
                if not 0 <= other < S:
                    continue
                pf = torch.as_tensor(partner_feature[rows, r], dtype=torch.long)
                pv = _lookup(dense[other], jj, pf.clamp_min(0))
                ex.partner_acts[rows, r] = torch.where(okm & (pf >= 0).unsqueeze(1), pv, 0).numpy()
    ex.heldout = held
    return ex


def _count_heldout(held: dict, acts, sites, ids: np.ndarray, labels: np.ndarray) -> None:
    """Add one held-out batch: per feature, tokens where it fires, where its label token is
    present, and where both."""
    vocab = int(max(ids.max(initial=0), labels.max(initial=0))) + 1
    tok_count = np.bincount(ids, minlength=vocab)
    held["tokens"] += ids.size
    for s_i, site in enumerate(sites):
        a = acts[site]
        fires = (a.values > 0).cpu().numpy()
        feat = a.indices.cpu().numpy()
        tok = np.broadcast_to(ids[:, None], feat.shape)
        held["fires"][s_i] += np.bincount(feat[fires], minlength=labels.shape[1])
        both = fires & (tok == labels[s_i][feat])
        held["tp"][s_i] += np.bincount(feat[both], minlength=labels.shape[1])
        lab = labels[s_i]
        held["present"][s_i] += np.where(lab >= 0, tok_count[np.clip(lab, 0, None)], 0)


def token_labels(examples: Examples, doc_tokens: dict[int, np.ndarray], shape: tuple[int, int],
                 heldout_every: int = 5) -> np.ndarray:
    """``[S, F]`` token id: the most frequent example token among a feature's highest examples
    outside the held-out batches (ties: the one with the higher activation); -1 when none."""
    S, F = shape
    ex = examples
    use = (ex.kind == 0)
    if heldout_every > 0:
        use &= ex.batch % heldout_every != heldout_every - 1
    k = int(ex.rank.max(initial=0)) + 1
    grid = np.full((S, F, k), -1, dtype=np.int64)
    centre = np.array([doc_tokens[int(d)][int(p)] for d, p in zip(ex.doc[use], ex.pos[use])], dtype=np.int64) \
        if use.any() else np.zeros(0, np.int64)
    grid[ex.site[use], ex.feature[use], ex.rank[use]] = centre
    valid = grid >= 0
    same = (grid[..., :, None] == grid[..., None, :]) & valid[..., :, None] & valid[..., None, :]
    votes = same.sum(-1)
    best = votes.argmax(-1)  # first of the most frequent: the highest activation among them
    label = np.take_along_axis(grid, best[..., None], -1)[..., 0]
    return np.where(valid.any(-1), label, -1)


def label_scores(held: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(precision, recall)`` ``[S, F]`` of "the label token is present" as a predictor of "the
    feature fires" on the held-out tokens (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(held["present"] > 0, held["tp"] / held["present"], np.nan)
        recall = np.where(held["fires"] > 0, held["tp"] / held["fires"], np.nan)
    return precision, recall
