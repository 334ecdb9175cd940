"""Derived views of the cross-layer statistics, for the notebooks (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


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


def strongest_across_pairs(matrices: list[np.ndarray], n: int = 4,
                           per_pair: int = 3) -> list[tuple[float, int, int, int]]:
    """The ``n`` strongest entries over all adjacent pairs as ``(value, pair, a, b)``, largest
    first, from the ``per_pair`` strongest of each pair's ``[F_a, F_b]`` matrix."""
    found = ((value, i, a, b) for i, m in enumerate(matrices) for a, b, value in strongest_pairs(m, per_pair))
    return sorted(found, reverse=True)[:n]


def association_rows(pairs: list[str], r: list[np.ndarray], jaccard: list[np.ndarray], naive: list[np.ndarray],
                     threshold: float = 0.2) -> list[dict[str, object]]:
    """Per adjacent pair of sites: the share of feature pairs at or above ``threshold`` in Pearson
    r (of the defined ones), in Jaccard and in the co-occurrence that counts shared silence
    (:func:`naive_cooccurrence`), and the share whose r is undefined (a feature never fired)."""
    t = f"{threshold:g}"
    return [{"sites": name, f"r ≥ {t} (defined pairs)": fraction_above(r[i], threshold),
             "r undefined (a feature never fired)": np.isnan(r[i]).mean(),
             f"Jaccard ≥ {t}": fraction_above(jaccard[i], threshold),
             f"silence-counting co-occurrence ≥ {t}": fraction_above(naive[i], threshold)}
            for i, name in enumerate(pairs)]
