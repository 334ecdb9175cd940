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
