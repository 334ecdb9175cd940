"""Every feature's best decoder match at the next site, beside the two features' activation
correlation: does a shared decoder direction mean that the features fire together?

A best match is *spurious* when its cosine is high but the two features do not fire together:
their Pearson r is below :data:`SPURIOUS_R` or undefined (one of them never fired).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .decoder import top_cosine_matches

#: below this activation correlation a high-cosine pair counts as not firing together
SPURIOUS_R = 0.1


@dataclass(frozen=True)
class DecoderMatches:
    """One row per feature of site L of every adjacent pair: ``pair`` (index of the pair), ``a``
    (the feature), ``b`` (its best decoder match at L+1), ``cos`` (their cosine), ``r`` (their
    Pearson r, NaN when undefined)."""

    pair: np.ndarray
    a: np.ndarray
    b: np.ndarray
    cos: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.cos.size)

    def spurious(self, threshold: float) -> tuple[int, int]:
        """``(matches with cosine >= threshold, those of them that do not fire together)``."""
        high = self.cos >= threshold
        bad = high & (~np.isfinite(self.r) | (self.r < SPURIOUS_R))
        return high.sum(), bad.sum()

    def spurious_rows(self, thresholds: Sequence[float]) -> list[dict[str, Any]]:
        """:meth:`spurious` at each threshold, with the share of spurious matches."""
        rows = []
        for t in thresholds:
            h, b = self.spurious(t)
            rows.append({"cosine ≥": t, "best-match pairs": int(h), f"do not fire together (r < {SPURIOUS_R:g})": int(b),
                         "share": b / max(h, 1)})
        return rows

    def cosine_r_correlation(self) -> float:
        """Pearson correlation between the cosine and r, over the matches whose r is defined."""
        ok = np.isfinite(self.r)
        return np.corrcoef(self.cos[ok], self.r[ok])[0, 1]

    def highest(self, n: int) -> np.ndarray:
        """Row indices of the ``n`` highest cosines, highest first."""
        return np.argsort(-self.cos)[:n]


def best_decoder_matches(saes: dict, site_pairs: Sequence[tuple[str, str]],
                         correlation: dict[str, np.ndarray]) -> DecoderMatches:
    """For every feature of site L of each adjacent pair, its most similar decoder direction at
    L+1 (:func:`top_cosine_matches`) and the two features' r from the ``correlation`` artefact
    (``r_<pair>`` ``[F_a, F_b]``)."""
    cols: dict[str, list[np.ndarray]] = {"pair": [], "a": [], "b": [], "cos": [], "r": []}
    for i, (site_a, site_b) in enumerate(site_pairs):
        idx, val = top_cosine_matches(saes[site_a], saes[site_b], k=1)
        a, b = np.arange(len(idx)), idx[:, 0].numpy()
        cols["pair"].append(np.full(len(idx), i))
        cols["a"].append(a)
        cols["b"].append(b)
        cols["cos"].append(val[:, 0].numpy())
        cols["r"].append(correlation[f"r_{i}"][a, b])
    return DecoderMatches(**{k: np.concatenate(v) for k, v in cols.items()})
