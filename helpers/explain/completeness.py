"""Completeness: for how many members of a concept family does some feature fire on its mentions?

The London boroughs test of issue 18 on what the corpus holds. For a family's member ``m``
(mentions from :mod:`.concepts`) and a feature ``f`` of one set of features (a site, or one width
of a width sweep at a site), over the tokens of the pass's stream:

- **precision** ``P(m, f)`` = tokens of mentions of ``m`` where ``f`` fires / tokens where ``f``
  fires (all tokens of the stream);
- **recall** ``R(m, f)`` = mentions of ``m`` on which ``f`` fires on at least one token / mentions
  of ``m``;
- ``f`` **covers** ``m`` when ``P >= 0.8`` and ``R >= 0.5`` (:data:`MIN_PRECISION`,
  :data:`MIN_RECALL`); ``m`` is **covered** when some feature covers it.

**Coverage** of a family and a set of features = members covered / members **found** (with at
least one mention in the stream; members never mentioned cannot be tested and are left out).

A member's **best feature**: among the features covering it, the one of highest F1
(``2PR / (P + R)``); when none covers it, the one of highest F1 overall (-1: none fires on it).

All features of a set at once, with sparse products (``A`` ``[N, F]`` firing, ``T`` ``[E, N]``
mention tokens, ``B`` ``[M, E]`` member of each mention): ``B (T A > 0)`` counts the mentions hit,
``(B T > 0) A`` the member's tokens hit, and ``A``'s column sums the tokens where each feature fires.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .concepts import Mentions

MIN_PRECISION = 0.8
MIN_RECALL = 0.5


def firing_csr(token: np.ndarray, feature: np.ndarray, n_tokens: int, n_features: int) -> sp.csr_matrix:
    """``[N, F]`` 1 where feature f fires on token n (duplicates counted once)."""
    token, feature = np.asarray(token, np.int64), np.asarray(feature, np.int64)
    a = sp.csr_matrix((np.ones(token.size, np.float32), (token, feature)), shape=(n_tokens, n_features))
    a.sum_duplicates()
    a.data[:] = 1
    return a


def member_scores(mentions: Mentions, token: np.ndarray, feature: np.ndarray, n_features: int,
                  min_precision: float = MIN_PRECISION, min_recall: float = MIN_RECALL) -> dict[str, np.ndarray]:
    """``[M]`` arrays for every member of the family: ``mentions``, ``frequency`` (per million
    tokens), ``best_feature``, its ``precision`` and ``recall`` (NaN where the member has no
    mention), ``covered`` and ``n_covering`` (features covering it); see the module docstring."""
    M = len(mentions.family.members)
    a = firing_csr(token, feature, mentions.n_tokens, n_features)
    fires = np.asarray(a.sum(0)).ravel()
    hit = (mentions.tokens @ a).tocsr()
    hit.data[:] = 1
    recall_n = (mentions.by_member() @ hit).tocoo()
    precision_n = (mentions.member_tokens() @ a).tocoo()
    counts = mentions.counts
    # both have the same pattern (a member's token is hit iff one of its mentions is): align by key
    key_p = precision_n.row.astype(np.int64) * n_features + precision_n.col
    key_r = recall_n.row.astype(np.int64) * n_features + recall_n.col
    order = np.argsort(key_r)
    r_n = recall_n.data[order][np.searchsorted(key_r[order], key_p)]
    row, col = precision_n.row.astype(np.int64), precision_n.col.astype(np.int64)
    precision = precision_n.data / fires[col]
    recall = r_n / counts[row]
    covers = (precision >= min_precision) & (recall >= min_recall)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    out = {"mentions": counts, "frequency": mentions.frequency, "best_feature": np.full(M, -1, np.int64),
           "precision": np.where(counts > 0, 0.0, np.nan), "recall": np.where(counts > 0, 0.0, np.nan),
           "covered": np.zeros(M, bool), "n_covering": np.bincount(row[covers], minlength=M).astype(np.int64)}
    if row.size:
        best = np.lexsort((-f1, -covers.astype(np.int8), row))  # by member, covering first, then F1
        first = best[np.r_[True, row[best][1:] != row[best][:-1]]]
        m = row[first]
        out["best_feature"][m] = col[first]
        out["precision"][m], out["recall"][m], out["covered"][m] = precision[first], recall[first], covers[first]
    return out


def completeness(mentions: Mentions | Sequence[Mentions], firings: Mapping[Any, tuple[np.ndarray, np.ndarray]],
                 n_features: int | Mapping[Any, int], min_precision: float = MIN_PRECISION,
                 min_recall: float = MIN_RECALL) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, member_rows)`` of every family of ``mentions`` and every set of features of
    ``firings`` (``{label: (token, feature)}``, e.g. ``{site: ...}`` or ``{width: ...}``;
    ``n_features``: one count for all, or ``{label: count}``).

    ``rows``: one per family and label: ``family``, ``saes`` (the label), ``members`` (listed),
    ``found`` (mentioned), ``covered``, ``coverage`` (covered / found). ``member_rows``: one per
    family, label and member found: ``member``, ``mentions``, ``frequency``, ``best_feature``,
    ``precision``, ``recall``, ``covered``, ``n_covering``.
    """
    families = [mentions] if isinstance(mentions, Mentions) else list(mentions)
    rows, members = [], []
    for men in families:
        found = men.counts > 0
        for label, (token, feature) in firings.items():
            F = n_features[label] if isinstance(n_features, Mapping) else n_features
            sc = member_scores(men, token, feature, int(F), min_precision, min_recall)
            n_cov = int(sc["covered"].sum())
            rows.append({"family": men.family.name, "saes": label, "members": len(men.family.members),
                         "found": int(found.sum()), "covered": n_cov,
                         "coverage": n_cov / found.sum() if found.any() else float("nan")})
            for i in np.flatnonzero(found):
                members.append({"family": men.family.name, "saes": label, "member": men.family.names[i],
                                **{k: v[i].item() for k, v in sc.items()}})
    return rows, members


def coverage_by_frequency(member_rows: Sequence[Mapping[str, Any]], edges: Sequence[float] | None = None,
                          per_bin: int = 4) -> dict[Any, list[dict[str, Any]]]:
    """``{label: [{lo, hi, members, covered, coverage, frequency}]}``: the members binned by their
    frequency (per million tokens; ``edges``, default: powers of 2 spanning the members), coverage
    per bin; ``frequency`` is the bin's geometric mean, bins with fewer than ``per_bin`` members are
    merged into the next (the last into the one before)."""
    freq = np.array([r["frequency"] for r in member_rows], float)
    if edges is None:
        if not freq.size:
            return {}
        lo, hi = np.floor(np.log2(freq.min())), np.ceil(np.log2(freq.max())) + (freq.min() == freq.max())
        edges = 2.0 ** np.arange(lo, hi + 1)
    edges = np.asarray(edges, float)
    out: dict[Any, list[dict[str, Any]]] = {}
    labels = list(dict.fromkeys(r["saes"] for r in member_rows))
    for label in labels:
        mine = [r for r in member_rows if r["saes"] == label]
        f = np.array([r["frequency"] for r in mine], float)
        c = np.array([r["covered"] for r in mine], bool)
        b = np.clip(np.searchsorted(edges, f, side="right") - 1, 0, len(edges) - 2)
        bins, start = [], 0
        for i in range(len(edges) - 1):  # merge small bins forward
            n = int(((b >= start) & (b <= i)).sum())
            if n >= per_bin or i == len(edges) - 2:
                bins.append((start, i))
                start = i + 1
        if len(bins) > 1 and int(((b >= bins[-1][0]) & (b <= bins[-1][1])).sum()) < per_bin:
            bins[-2:] = [(bins[-2][0], bins[-1][1])]
        res = []
        for s, e in bins:
            inside = (b >= s) & (b <= e)
            if inside.any():
                res.append({"lo": float(edges[s]), "hi": float(edges[e + 1]), "members": int(inside.sum()),
                            "covered": int(c[inside].sum()), "coverage": float(c[inside].mean()),
                            "frequency": float(np.exp(np.log(f[inside]).mean()))})
        out[label] = res
    return out


def format_completeness(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per family and set of features: members covered / found (coverage)."""
    return "\n".join(f"{r['family']:>18} {r['saes']!s:>26}: {r['covered']:>3} / {r['found']:>3} found of "
                     f"{r['members']:>3} listed covered ({100 * r['coverage']:.0f}%)" for r in rows)
