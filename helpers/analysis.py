"""Derived views of the statistics, for the notebooks (numpy in, numpy/pandas out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError


def strongest_pairs(matrix: np.ndarray, n: int = 20, min_value: float | None = None) -> list[tuple[int, int, float]]:
    """The ``n`` largest finite entries of ``[F_a, F_b]`` as ``(a, b, value)``, largest first."""
    flat = np.where(np.isfinite(matrix), matrix, -np.inf).ravel()
    if min_value is not None:
        flat = np.where(flat >= min_value, flat, -np.inf)
    n = min(n, int(np.isfinite(flat).sum()))
    if n == 0:
        return []
    idx = np.argpartition(-flat, n - 1)[:n]
    idx = idx[np.argsort(-flat[idx], kind="stable")]
    cols = matrix.shape[1]
    return [(int(i // cols), int(i % cols), float(flat[i])) for i in idx]


def naive_cooccurrence(count: np.ndarray, fired_a: np.ndarray, fired_b: np.ndarray, n_tokens: int) -> np.ndarray:
    """The share of tokens on which two features *agree* (both fire or both stay silent).

    This is the "co-occurrence" that counts tokens where both are zero: with sparse
    features it is close to 1 for almost every pair, which says nothing about them.
    """
    if n_tokens <= 0:
        raise ConfigError("n_tokens must be > 0")
    count = count.astype(np.int64)
    disagree = fired_a[:, None].astype(np.int64) + fired_b[None, :].astype(np.int64) - 2 * count
    return 1.0 - disagree / n_tokens


def fraction_above(values: np.ndarray, threshold: float) -> float:
    """Share of the finite entries that are >= threshold."""
    finite = values[np.isfinite(values)]
    return float((finite >= threshold).mean()) if finite.size else float("nan")


def examples(
    top: dict[str, np.ndarray],
    site_index: int,
    feature: int,
    documents,
    tokenizer,
    kind: str = "hi",
    n: int = 5,
    context_tokens: int = 12,
) -> list[dict[str, Any]]:
    """The feature's top (``kind="hi"``) or lowest non-zero (``"lo"``) examples with context."""
    from .corpus import token_context

    if kind not in ("hi", "lo"):
        raise ConfigError(f"kind must be 'hi' or 'lo', not {kind!r}")
    values = top[f"{kind}_values"][site_index, feature]
    docs = top[f"{kind}_doc"][site_index, feature]
    pos = top[f"{kind}_pos"][site_index, feature]
    by_id = {d.doc_id: d for d in documents}
    rows = []
    for v, d, p in zip(values[:n], docs[:n], pos[:n]):
        if d < 0:
            break
        left, token, right = token_context(tokenizer, by_id[int(d)], int(p), context_tokens)
        rows.append({"activation": float(v), "document": by_id[int(d)].title,
                     "left": left, "token": token, "right": right})
    return rows


def top_tokens(top: dict[str, np.ndarray], site_index: int, feature: int, documents, tokenizer, n: int = 5) -> str:
    """A short label for a feature: the tokens of its highest examples, most frequent first."""
    from collections import Counter

    rows = examples(top, site_index, feature, documents, tokenizer, "hi", n=len(top["hi_doc"][0, 0]),
                    context_tokens=0)
    counts = Counter(r["token"].strip() for r in rows)
    return ", ".join(t for t, _ in counts.most_common(n)) or "(never fired)"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN pairs dropped."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return float("nan")

    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        # average the ranks of ties
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return (sums / counts)[inverse]

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def topical_features(top: dict[str, np.ndarray], site_index: int, documents, tokenizer, n: int = 3,
                     min_docs: int = 3, max_docs: int = 10, max_act: np.ndarray | None = None) -> list[int]:
    """Features whose top examples come from a few distinct documents and whose top token is a
    word (not punctuation or a short function word): candidates for topic steering.

    Ordered by maximum activation (``max_act`` ``[F]``) when given, else by feature index.
    """
    docs = top["hi_doc"][site_index]
    n_docs = np.array([len({int(d) for d in row if d >= 0}) for row in docs])
    ok = np.flatnonzero((n_docs >= min_docs) & (n_docs <= max_docs))
    if max_act is not None:
        ok = ok[np.argsort(-max_act[ok], kind="stable")]
    chosen = []
    for f in ok:
        label = top_tokens(top, site_index, int(f), documents, tokenizer, n=1).lstrip("#")
        if label.isalpha() and len(label) > 3:
            chosen.append(int(f))
        if len(chosen) == n:
            break
    return chosen
