"""Search features by prompts, and one prompt's active-feature graph across sites.

**Search.** Given positive and negative prompts, the features of every site whose maximum
activation over a prompt's content tokens is above ``threshold`` on ALL positives and on
NONE of the negatives, ranked by the *margin*: the lowest positive maximum minus the
highest negative maximum (with no negatives, minus the threshold).

**Prompt graph.** For one prompt, the features active (> 0) on each of its tokens at every
site, linked between adjacent sites when a measure of the partner tables
(:mod:`helpers.evolution.partners`) passes a threshold: nodes and edges as plain data (for
the browser, :mod:`.browser`) that record on which tokens each node and edge is active.

Prompts are tokenized and batched exactly as the statistics pass batches its documents
(:func:`helpers.subject.corpus.iter_token_batches`, ``exp.context_length`` and
``exp.batch_size``; content tokens only), so a feature's activation on a prompt is the one
the pass would have seen. A prompt longer than one row is read in consecutive windows
(each window sees only its own tokens, as in the pass) and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "PromptActivations", "SearchResult", "prompt_activations", "prompt_continuity", "prompt_graph", "search",
    "search_funnel", "search_prompts", "token_subgraph",
]


@dataclass
class PromptActivations:
    """Dense SAE activations of each prompt's content tokens at every site."""

    prompts: list[str]
    sites: list[str]
    acts: list[dict[str, np.ndarray]]  # per prompt: {site: [n_tokens, F]} float32
    tokens: list[list[str]]  # per prompt: the token strings
    windows: list[int]  # per prompt: how many windows (rows) it took
    notes: list[str] = field(default_factory=list)

    def maxima(self) -> np.ndarray:
        """``[n_prompts, S, F]``: each feature's maximum over the prompt's tokens."""
        return np.stack([np.stack([a[s].max(0) for s in self.sites]) for a in self.acts])


def _check_prompts(prompts: Sequence[str], what: str) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigError(f"{what} prompts must be a list of strings, not one string: write [{prompts!r}]")
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"{what} prompt {i} is empty: give it some text or remove it")
    return prompts


def _check_activation_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or not math.isfinite(float(threshold)) \
            or float(threshold) < 0:
        raise ConfigError(f"activation threshold {threshold!r} must be a finite number >= 0 "
                          "(0 means 'fires at all')")
    return float(threshold)


@torch.no_grad()
def prompt_activations(subject, saes: dict[str, Any], exp, prompts: Sequence[str]) -> PromptActivations:
    """Run the prompts through the subject and the SAEs, batched as the statistics pass batches.

    Raises :class:`ConfigError` for no prompts, an empty prompt or one with no content token.
    """
    from ..subject.capture import capture_residuals
    from ..subject.corpus import Document, iter_token_batches

    prompts = _check_prompts(prompts, "the")
    if not prompts:
        raise ConfigError("no prompts given: pass at least one non-empty prompt")
    tok = subject.tokenizer
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            raise ConfigError(f"prompt {i} ({prompts[i]!r}) has no token after tokenization: give it words")
    special = subject.special_tokens
    window = exp.context_length - len(special.prefix) - len(special.suffix)
    sites = list(exp.sites)
    docs = [Document(i, f"prompt {i}", p) for i, p in enumerate(prompts)]
    parts: list[dict[str, list[tuple[int, np.ndarray]]]] = [{s: [] for s in sites} for _ in prompts]
    windows = [0] * len(prompts)
    for batch in iter_token_batches(docs, tok, special, exp.context_length, exp.batch_size):
        acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, sites)
        mask = batch.token_mask
        doc = batch.doc_ids[mask].numpy()
        pos = batch.positions[mask].numpy()
        for r in range(mask.shape[0]):
            windows[int(batch.doc_ids[r][mask[r]][0])] += 1
        for s in sites:
            f = saes[s].encode(acts[s][mask.to(acts[s].device)].to(saes[s].W_enc.dtype)).float().cpu().numpy()
            for d in np.unique(doc):
                sel = doc == d
                parts[int(d)][s].append((int(pos[sel][0]), f[sel]))
    out = [{s: np.concatenate([a for _, a in sorted(p[s], key=lambda t: t[0])]) for s in sites} for p in parts]
    notes = [f"prompt {i} has {len(row)} tokens, more than the {window} of one context row: read in "
             f"{windows[i]} consecutive windows, each seeing only its own tokens (as the statistics pass does)"
             for i, row in enumerate(ids) if windows[i] > 1]
    tokens = [[tok.decode([t]) for t in row] for row in ids]
    return PromptActivations(prompts, sites, out, tokens, windows, notes)


@dataclass
class SearchResult:
    """Features on all positives and none of the negatives, best margin first."""

    positives: list[str]
    negatives: list[str]
    threshold: float
    rows: list[dict[str, Any]]  # site, layer, feature, margin, lowest_positive, highest_negative
    candidates: list[dict[str, Any]]  # when nothing matched: the closest features by margin
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.rows)

    def features(self) -> set[tuple[str, int]]:
        return {(r["site"], r["feature"]) for r in self.rows}

    def by_site(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.rows:
            out.setdefault(r["site"], []).append(r["feature"])
        return out

    def site_counts(self, sites: Sequence[str]) -> dict[str, int]:
        """``{site: features found there}`` for every site, in the order of ``sites``."""
        return {s: len(self.by_site().get(s, [])) for s in sites}

    def message(self) -> str:
        """One line: what was found, or that nothing was, with the closest candidates."""
        what = (f"above {self.threshold:g} on all {len(self.positives)} positive prompt(s) and on none of "
                f"the {len(self.negatives)} negative(s)")
        if self.rows:
            return f"{len(self.rows)} feature(s) {what}"
        near = ", ".join(f"{c['site']} #{c['feature']} (margin {c['margin']:+.3g}: lowest positive "
                         f"{c['lowest_positive']:.3g}, highest negative {c['highest_negative']:.3g})"
                         for c in self.candidates) or "none (no feature fired on every positive)"
        return (f"no feature fires {what}; closest candidates by margin: {near}. "
                "Lower the threshold, drop a prompt, or try other wording")


def search(positive: PromptActivations, negative: PromptActivations | None, threshold: float = 0.0,
           n_candidates: int = 5) -> SearchResult:
    """The AND/NOT search on activations already computed (see :func:`prompt_activations`)."""
    threshold = _check_activation_threshold(threshold)
    sites = positive.sites
    pos = positive.maxima()  # [P, S, F]
    neg = negative.maxima() if negative is not None and negative.prompts else np.zeros((0,) + pos.shape[1:], pos.dtype)
    lowest_pos = pos.min(0)
    highest_neg = neg.max(0) if len(neg) else np.full_like(lowest_pos, threshold)
    ok = (lowest_pos > threshold) & (highest_neg <= threshold)
    margin = lowest_pos.astype(np.float64) - highest_neg.astype(np.float64)

    def rows_of(mask: np.ndarray) -> list[dict[str, Any]]:
        layer, feat = np.nonzero(mask)
        order = np.lexsort((feat, layer, -margin[layer, feat]))  # margin desc, then site, feature
        return [{"site": sites[int(layer[i])], "layer": int(layer[i]), "feature": int(feat[i]),
                 "margin": float(margin[layer[i], feat[i]]), "lowest_positive": float(lowest_pos[layer[i], feat[i]]),
                 "highest_negative": float(highest_neg[layer[i], feat[i]])} for i in order]

    rows = rows_of(ok)
    candidates = [] if rows else rows_of(~ok & (lowest_pos > 0))[:n_candidates]
    notes = list(positive.notes) + ([] if negative is None else [f"negative {n}" for n in negative.notes])
    return SearchResult(list(positive.prompts), [] if negative is None else list(negative.prompts),
                        threshold, rows, candidates, notes)


def search_funnel(positive: PromptActivations, negative: PromptActivations, threshold: float):
    """How the AND and the NOT narrow a search, per site (rows): the features above
    ``threshold`` on the first positive, on every positive (AND), and on every positive but no
    negative (NOT): a pandas DataFrame, one column per step."""
    import pandas as pd

    threshold = _check_activation_threshold(threshold)
    pos, neg = positive.maxima() > threshold, negative.maxima() > threshold  # [prompts, sites, features]
    return pd.DataFrame({
        "first positive": pos[0].sum(1),
        "all positives (AND)": pos.all(0).sum(1),
        "AND, no negative (NOT)": (pos.all(0) & ~neg.any(0)).sum(1),
    }, index=list(positive.sites))


def search_prompts(subject, saes: dict[str, Any], exp, positives: Sequence[str], negatives: Sequence[str] = (),
                   threshold: float = 0.0, n_candidates: int = 5) -> SearchResult:
    """Features of every site firing above ``threshold`` on ALL ``positives`` and NONE of ``negatives``.

    Raises :class:`ConfigError` for no positive prompt, an empty prompt or a threshold < 0.
    """
    _check_activation_threshold(threshold)
    positives = _check_prompts(positives, "positive")
    negatives = _check_prompts(negatives, "negative")
    if not positives:
        raise ConfigError("no positive prompt: give at least one prompt the features must fire on")
    pos = prompt_activations(subject, saes, exp, positives)
    neg = prompt_activations(subject, saes, exp, negatives) if negatives else None
    return search(pos, neg, threshold, n_candidates)


def _pair_lookup(partners: dict, pair: int, m: int) -> dict[tuple[int, int], float]:
    """``{(a, b): value}`` for every pair of ``pair`` listed in either partner table under measure ``m``."""
    out: dict[tuple[int, int], float] = {}
    for direction in ("down", "up"):
        idx = partners[f"{direction}_index"][pair, m]
        val = partners[f"{direction}_values"][pair, m, :, :, m]
        f, slot = np.nonzero(idx >= 0)
        for x, y, v in zip(f, idx[f, slot], val[f, slot]):
            key = (int(x), int(y)) if direction == "down" else (int(y), int(x))
            out[key] = float(v)
    return out


def prompt_graph(acts: PromptActivations, index: int, partners: dict, measure: str = "pearson",
                 threshold: float = 0.1, min_activation: float = 0.0) -> dict[str, Any]:
    """The active-feature graph of prompt ``index``: ``{"prompt", "tokens", "sites", "measure",
    "threshold", "nodes", "edges"}``.

    ``nodes``: ``{"id", "site", "layer", "feature", "acts"}``, ``acts`` the activation on each
    token (0 where inactive), for every feature active above ``min_activation`` on some token.
    ``edges``: ``{"source", "target", "value", "tokens"}`` between nodes of adjacent sites whose
    ``measure`` (from the partner tables: each feature's top-k partners) is ``>= threshold``;
    ``tokens`` lists the tokens on which both ends are active.
    """
    from ..evolution.communities import node_id
    from ..evolution.measures import check_threshold
    from ..evolution.partners import measure_index

    check_threshold(measure, threshold)
    _check_activation_threshold(min_activation)
    if not 0 <= index < len(acts.prompts):
        raise ConfigError(f"prompt index {index} out of range: {len(acts.prompts)} prompt(s) were run")
    if list(partners["sites"]) != list(acts.sites):
        raise ConfigError(f"the partner tables are for sites {list(partners['sites'])}, the activations for "
                          f"{acts.sites}: use the same experiment for both")
    m = measure_index(measure)
    sites = acts.sites
    active = {s: acts.acts[index][s] > min_activation for s in sites}  # [T, F]
    nodes, edges = [], []
    for layer, s in enumerate(sites):
        for f in np.flatnonzero(active[s].any(0)):
            nodes.append({"id": node_id(s, f), "site": s, "layer": layer, "feature": int(f),
                          "acts": [round(float(v), 4) for v in acts.acts[index][s][:, f]]})
    for p in range(len(sites) - 1):
        a_site, b_site = sites[p], sites[p + 1]
        a_feats = set(np.flatnonzero(active[a_site].any(0)).tolist())
        b_feats = set(np.flatnonzero(active[b_site].any(0)).tolist())
        for (a, b), v in sorted(_pair_lookup(partners, p, m).items()):
            if a in a_feats and b in b_feats and v >= threshold:
                both = np.flatnonzero(active[a_site][:, a] & active[b_site][:, b])
                edges.append({"source": node_id(a_site, a), "target": node_id(b_site, b),
                              "value": round(v, 4), "tokens": both.tolist()})
    return {"prompt": acts.prompts[index], "tokens": acts.tokens[index], "sites": list(sites),
            "measure": measure, "threshold": float(threshold), "nodes": nodes, "edges": edges}


def token_subgraph(graph: dict, token: int) -> dict[str, Any]:
    """The part of a prompt graph active on one token (negative: counted from the end)."""
    n_tok = len(graph["tokens"])
    if not -n_tok <= token < n_tok:
        raise ConfigError(f"token {token} out of range: the prompt has {n_tok} tokens")
    t = token % n_tok
    nodes = [dict(n, activation=n["acts"][t]) for n in graph["nodes"] if n["acts"][t] > 0]
    edges = [e for e in graph["edges"] if t in e["tokens"]]
    return {**graph, "token": t, "nodes": nodes, "edges": edges}


def prompt_continuity(graph: dict) -> np.ndarray:
    """``[T, S-1]``: per token, the share of the features active at site L that are linked (an
    edge of the graph active on that token) to a feature active at site L+1; NaN where none is active."""
    sites = graph["sites"]
    T, P = len(graph["tokens"]), len(sites) - 1
    active = np.zeros((T, P), np.int64)
    linked = np.zeros((T, P), np.int64)
    layer_of = {n["id"]: n["layer"] for n in graph["nodes"]}
    for n in graph["nodes"]:
        if n["layer"] < P:
            active[:, n["layer"]] += np.asarray(n["acts"]) > 0
    seen: dict[tuple[int, str], None] = {}
    for e in graph["edges"]:
        for t in e["tokens"]:
            seen[(t, e["source"])] = None
    for t, src in seen:
        linked[t, layer_of[src]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(active > 0, linked / np.maximum(active, 1), np.nan)
