"""Choosing each feature's explanation: the rule that best predicts its firing on training text.

A **rule** is a set of keys of one kind (:mod:`.stream`): it *matches* a token when the token has
one of the keys (``token``: is one of these tokens; ``bigram``: ends one of these bigrams;
``previous``: follows one of these tokens; ``title``: sits in a document whose title has this
word). At most ``max_keys`` keys (1 for ``title``).

**Candidates and choice.** For every feature f and kind, on the training tokens only:
``tp[f, k]`` = tokens with key k where f fires, ``n[k]`` = tokens with key k, ``P[f]`` = tokens
where f fires. The candidates are the ``max_keys`` keys of largest ``tp`` (the feature's top
tokens, top bigrams, top previous tokens, top title words), ordered by precision
``tp / n`` (then by ``tp``); every prefix of that order is a candidate rule, scored by its
token-level F1 on the training tokens, ``2 TP / (N_matched + P)`` (the keys of one kind never
overlap on a token, so ``TP`` and ``N_matched`` are sums over the keys). Each kind keeps its best
prefix (ties: the shorter); the explanation is the kind with the best F1 (ties: the order of
:data:`~.stream.KINDS`). The F1, precision and recall of every kind's best rule are kept: they
say why the explanation won.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .stream import KINDS

MAX_KEYS = 4


@dataclass
class Choice:
    """Per feature: ``keys`` ``[F, max_keys]`` (-1 padded) and the training ``f1``, ``precision``,
    ``recall`` ``[F]`` of the best rule of one kind (NaN where the feature never fired)."""

    keys: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _group_start(row: np.ndarray) -> np.ndarray:
    """For sorted ``row``, the index of the first entry of each entry's group."""
    if row.size == 0:
        return row
    first = np.r_[True, row[1:] != row[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(row.size), 0))


def best_prefix(tp: sp.csr_matrix, n_key: np.ndarray, fired: np.ndarray, max_keys: int = MAX_KEYS) -> Choice:
    """The best rule of one kind for every feature (see the module docstring).

    ``tp`` ``[F, K]`` training firings per key, ``n_key`` ``[K]`` training tokens per key,
    ``fired`` ``[F]`` training firings.
    """
    F = tp.shape[0]
    coo = tp.tocoo()
    row, col, t = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)
    keep = t > 0
    row, col, t = row[keep], col[keep], t[keep]
    # the max_keys keys of largest tp (ties: smaller key id)
    order = np.lexsort((col, -t, row))
    row, col, t = row[order], col[order], t[order]
    rank = np.arange(row.size) - _group_start(row)
    keep = rank < max_keys
    row, col, t = row[keep], col[keep], t[keep]
    n = n_key[col].astype(np.float64)
    # ordered by precision, then tp, then key
    order = np.lexsort((col, -t, -t / n, row))
    row, col, t, n = row[order], col[order], t[order], n[order]
    start = _group_start(row)
    length = np.arange(row.size) - start + 1
    ct, cn = np.cumsum(t), np.cumsum(n)
    ct = ct - np.where(start > 0, ct[start - 1], 0) if row.size else ct
    cn = cn - np.where(start > 0, cn[start - 1], 0) if row.size else cn
    P = fired[row].astype(np.float64)
    f1 = 2 * ct / (cn + P)
    # best prefix of each feature: largest f1, then shortest
    best = np.lexsort((length, -f1, row))
    first = best[np.r_[True, row[best][1:] != row[best][:-1]]] if row.size else best
    out = Choice(np.full((F, max_keys), -1, np.int64), *(np.full(F, np.nan) for _ in range(3)))
    r = row[first]
    out.f1[r] = f1[first]
    out.precision[r] = ct[first] / cn[first]
    out.recall[r] = ct[first] / P[first]
    group = np.cumsum(np.r_[True, row[1:] != row[:-1]]) - 1 if row.size else row
    chosen = length <= length[first][group]
    out.keys[row[chosen], length[chosen] - 1] = col[chosen]
    return out


@dataclass
class Rules:
    """Every feature's explanation: ``kind`` ``[F]`` (index into :data:`KINDS`, -1: none) and
    ``keys`` ``[F, max_keys]`` (-1 padded), in the keys of its kind."""

    kind: np.ndarray
    keys: np.ndarray

    def matrix(self, kind: int, n_keys: int) -> sp.csr_matrix:
        """``[K, F]``: 1 where key k is in the rule of feature f (features of ``kind`` only)."""
        f, j = np.nonzero((self.kind[:, None] == kind) & (self.keys >= 0))
        k = self.keys[f, j]
        return sp.csr_matrix((np.ones(f.size, np.float32), (k, f)), shape=(n_keys, self.kind.size))


def firing_matrix(token: np.ndarray, feature: np.ndarray, n_tokens: int, n_features: int) -> sp.csr_matrix:
    """``[F, N]`` 1 where feature f fires on token n (from the codes' active pairs)."""
    data = np.ones(token.size, np.float32)
    m = sp.csr_matrix((data, (np.asarray(feature, np.int64), token)), shape=(n_features, n_tokens))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def choose_rules(fire: sp.csr_matrix, spaces: dict, max_keys: int = MAX_KEYS
                 ) -> tuple[Rules, dict[str, np.ndarray]]:
    """The explanation of every feature from its firing on the training tokens.

    ``fire`` ``[F, N]`` (training tokens), ``spaces`` the :class:`~.stream.KeySpace` of every
    kind over the same tokens. Returns the rules and the candidates' scores: ``f1``,
    ``precision``, ``recall`` ``[F, len(KINDS)]`` and ``keys`` ``[F, len(KINDS), max_keys]``.
    """
    F = fire.shape[0]
    fired = np.asarray(fire.sum(1)).ravel()
    why = {n: np.full((F, len(KINDS)), np.nan) for n in ("f1", "precision", "recall")}
    why["keys"] = np.full((F, len(KINDS), max_keys), -1, np.int64)
    for i, kind in enumerate(KINDS):
        m = spaces[kind].matrix
        tp = (fire @ m).tocsr()
        n_key = np.asarray(m.sum(0)).ravel()
        c = best_prefix(tp, n_key, fired, 1 if kind == "title" else max_keys)
        why["f1"][:, i], why["precision"][:, i], why["recall"][:, i] = c.f1, c.precision, c.recall
        why["keys"][:, i, : c.keys.shape[1]] = c.keys
    score = np.where(np.isnan(why["f1"]), -1.0, why["f1"])
    kind = np.where(score.max(1) > 0, score.argmax(1), -1)
    keys = np.where(kind[:, None] >= 0, why["keys"][np.arange(F), np.maximum(kind, 0)], -1)
    return Rules(kind.astype(np.int8), keys), why
