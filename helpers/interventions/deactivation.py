"""The deactivation test: how much a downstream feature drops when one upstream feature is ablated.

An *edge* ``(w, a, b)`` names a text row ``w`` of a batch of short windows, a feature ``a`` of
site L and a feature ``b`` of site L+1. Its result is measured on the tokens of row ``w`` where
``b`` fires in the clean pass (content tokens only):

    relative drop of one token = (clean_b - ablated_b) / clean_b

:func:`ablation_drops` returns, per edge, the SUM of the relative drops over those tokens and
their number, so that a caller can pool several windows of one feature (mean = sum / count).

What makes it cheap (every edge gives the same numbers as one forward pass per edge,
:func:`ablation_drops_one_at_a_time`):

- one clean pass of the windows serves every edge;
- an edge whose ``a`` fires on no token of its row changes nothing: its ablated activation
  IS the clean one (drop 0), and no pass runs for it;
- the edges that share a row and an upstream feature share one ablated copy of the row;
- ablated copies run in batched passes that start at site L (the blocks before it are skipped)
  and stop right after site L+1 (adjacent sites: one block runs); the SAE of site L+1 encodes
  only the tokens where ``b`` fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..experiment import base_site, seed_of_site
from ..subject.models import Subject
from ..subject.capture import _postprocess, _site_value, trace_inputs
from ..subject.decode import decode_delta, decoder_scale
from .edits import Edit, _editable, check_edit, run_with_edits


@dataclass
class CleanWindows:
    """The clean pass of a batch of windows: what every edge of the batch reuses."""

    input_ids: torch.Tensor  # [W, T]
    attention_mask: torch.Tensor  # [W, T]
    token_mask: torch.Tensor  # [W, T] content tokens
    raw_a: torch.Tensor  # [W, T, d] residual stream at site L as the model carries it
    f_a: torch.Tensor  # [W, T, Fa] SAE activations at site L
    f_b: torch.Tensor  # [W, T, Fb] SAE activations at site L+1
    #: [W, T, 1] per-token factor of an SAE at site L that normalises its input (None: 1)
    scale_a: torch.Tensor | None = None


@torch.no_grad()
def clean_windows(subject: Subject, saes: dict[str, Any], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, token_mask: torch.Tensor, site_a: str, site_b: str) -> CleanWindows:
    """One clean pass of the windows, stopped after ``site_b``: the raw residual stream at ``site_a``
    (where ablated copies resume) and both sites' SAE activations."""
    import nnsight

    order = list(subject.spec.site_names())
    base_a, base_b = base_site(site_a), base_site(site_b)
    same = same_site(site_a, site_b)
    if base_a not in order or base_b not in order or (order.index(base_b) <= order.index(base_a) and not same):
        raise ConfigError(f"sites {site_a!r} -> {site_b!r}: the second must come after the first (or be a seed twin "
                          f"of it), both among {order}")
    dev, model = subject.device, subject.model
    ids, am = input_ids.to(dev), attention_mask.to(dev)
    with model.trace(**trace_inputs(subject, ids, am)) as tracer:
        raw_a = nnsight.save(_editable(subject, site_a))
        if not same:
            value_b = nnsight.save(_site_value(subject, site_b))
        tracer.stop()
    if same:  # two SAEs of one site: the second reads the same stream (the producer's output is the site)
        value_b = raw_a
    sae_a, sae_b = saes[site_a], saes[site_b]
    x_a = _postprocess(subject.centered, raw_a)
    return CleanWindows(
        input_ids=ids, attention_mask=am, token_mask=token_mask.to(dev).bool(), raw_a=raw_a,
        f_a=sae_a.encode(x_a.to(sae_a.W_enc.dtype)),
        f_b=sae_b.encode(_postprocess(subject.centered, value_b).to(sae_b.W_enc.dtype)),
        scale_a=decoder_scale(sae_a, x_a),
    )


def same_site(site_a: str, site_b: str) -> bool:
    """Whether ``site_b`` is a seed twin of ``site_a``'s model site (two SAEs of one site)."""
    return base_site(site_a) == base_site(site_b) and seed_of_site(site_b) is not None


def _check_edges(clean: CleanWindows, edges: Sequence[tuple[int, int, int]]) -> None:
    n_rows, fa, fb = clean.f_a.shape[0], clean.f_a.shape[-1], clean.f_b.shape[-1]
    for w, a, b in edges:
        if not (0 <= w < n_rows and 0 <= a < fa and 0 <= b < fb):
            raise ConfigError(f"edge (row {w}, a {a}, b {b}) is out of range: rows 0..{n_rows - 1}, "
                              f"upstream features 0..{fa - 1}, downstream 0..{fb - 1}")


def _relative(clean_b: torch.Tensor, ablated_b: torch.Tensor, fires: torch.Tensor) -> torch.Tensor:
    """Sum over the firing tokens of ``(clean - ablated) / clean``."""
    safe = torch.where(fires, clean_b, torch.ones_like(clean_b))
    return torch.where(fires, (clean_b - ablated_b) / safe, torch.zeros_like(clean_b)).sum(-1)


@torch.no_grad()
def ablation_drops(subject: Subject, saes: dict[str, Any], clean: CleanWindows, site_a: str, site_b: str,
                   edges: Sequence[tuple[int, int, int]], rows_per_pass: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per edge ``(w, a, b)``: the sum over the tokens of row ``w`` where ``b`` fires (clean) of
    ``b``'s relative drop when ``a`` is ablated at ``site_a``, and the number of those tokens.

    Returns ``(drop_sum [E] float64, n_firing [E] int64)`` on the CPU; the mean relative drop of
    an edge is ``drop_sum / n_firing`` (undefined where ``b`` fires on no token of the row).
    """
    if rows_per_pass < 1:
        raise ConfigError(f"rows_per_pass={rows_per_pass} must be >= 1")
    _check_edges(clean, edges)
    n_edges = len(edges)
    drop_sum = torch.zeros(n_edges, dtype=torch.float64)
    n_firing = torch.zeros(n_edges, dtype=torch.int64)
    if n_edges == 0:
        return drop_sum, n_firing
    dev = clean.f_a.device
    w_idx = torch.tensor([e[0] for e in edges], device=dev)
    a_idx = torch.tensor([e[1] for e in edges], device=dev)
    b_idx = torch.tensor([e[2] for e in edges], device=dev)
    clean_b = clean.f_b[w_idx, :, b_idx]  # [E, T]
    fires = (clean_b > 0) & clean.token_mask[w_idx]
    n_firing[:] = fires.sum(-1).cpu()
    a_acts = clean.f_a[w_idx, :, a_idx] * clean.attention_mask[w_idx]  # [E, T]
    # only edges where b fires and a fires somewhere in the row need an ablated pass
    needed = torch.nonzero((n_firing.to(dev) > 0) & (a_acts != 0).any(-1)).flatten().tolist()
    copies: dict[tuple[int, int], list[int]] = {}
    for e in needed:
        copies.setdefault((edges[e][0], edges[e][1]), []).append(e)
    keys = list(copies)
    sae_a, sae_b = saes[site_a], saes[site_b]
    for start in range(0, len(keys), rows_per_pass):
        chunk = keys[start : start + rows_per_pass]
        rows = torch.tensor([w for w, _ in chunk], device=dev)
        feats = torch.tensor([a for _, a in chunk], device=dev)
        # ablation removes the feature's contribution, keeping the SAE error and every other feature
        scale = None if clean.scale_a is None else clean.scale_a[rows]
        delta = decode_delta(sae_a, feats, -clean.f_a[rows, :, feats], scale)  # [R, T, d]
        if same_site(site_a, site_b):  # the ablation is read where it is made: no block runs
            after = _postprocess(subject.centered, clean.raw_a[rows] + delta.to(clean.raw_a.dtype))
        else:
            after = run_with_edits(subject, saes, clean.input_ids[rows], clean.attention_mask[rows], None, [site_b],
                                   delta=delta, delta_site=site_a, resume_from=clean.raw_a[rows])[site_b]
        es = [e for key in chunk for e in copies[key]]
        row_of = torch.tensor([r for r, key in enumerate(chunk) for _ in copies[key]], device=dev)
        es_t = torch.tensor(es, device=dev)
        # b is read only where it fired: encode those tokens of each copy, not the whole window
        keep = torch.zeros(after.shape[:2], dtype=torch.int64, device=dev)
        keep = keep.index_add_(0, row_of, fires[es_t].long()) > 0  # copies may serve several b
        f_kept = sae_b.encode(after[keep].to(sae_b.W_enc.dtype))  # [n_kept, Fb]
        slot = torch.full(after.shape[:2], -1, dtype=torch.long, device=dev)
        slot[keep] = torch.arange(int(keep.sum()), device=dev)
        pick = slot[row_of]  # [e, T]: row of f_kept for each firing token of each edge
        ablated = torch.where(fires[es_t], f_kept[pick.clamp_min(0), b_idx[es_t].unsqueeze(1)], 0.0)  # [e, T]
        drop_sum[es] = _relative(clean_b[es_t], ablated, fires[es_t]).double().cpu()
    return drop_sum, n_firing


@torch.no_grad()
def ablation_drops_one_at_a_time(subject: Subject, saes: dict[str, Any], input_ids: torch.Tensor,
                                 attention_mask: torch.Tensor, token_mask: torch.Tensor, site_a: str, site_b: str,
                                 edges: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for :func:`ablation_drops`: for every edge, a full clean and a full ablated
    forward pass of its row alone (no padding, no skipping). Slow; for tests and benchmarks."""
    dev = subject.device
    sae_b = saes[site_b]
    drop_sum = torch.zeros(len(edges), dtype=torch.float64)
    n_firing = torch.zeros(len(edges), dtype=torch.int64)
    for i, (w, a, b) in enumerate(edges):
        check_edit(subject, saes, Edit(site_a, a))
        keep = attention_mask[w].bool()
        ids = input_ids[w][keep].unsqueeze(0).to(dev)
        content = token_mask[w][keep].to(dev)
        clean = run_with_edits(subject, saes, ids, None, [None], [site_b])[site_b]
        ablated = run_with_edits(subject, saes, ids, None, [Edit(site_a, a, "ablate")], [site_b])[site_b]
        cb = sae_b.encode(clean.to(sae_b.W_enc.dtype))[0, :, b]
        ab = sae_b.encode(ablated.to(sae_b.W_enc.dtype))[0, :, b]
        fires = (cb > 0) & content
        n_firing[i] = int(fires.sum())
        drop_sum[i] = float(_relative(cb, ab, fires))
    return drop_sum, n_firing
