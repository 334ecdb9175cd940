"""Per-site and per-pair summaries of the pass's artefacts, as table rows (one dict a row).

What notebooks 1-3 close with: the maximum activations of the features that fired, the dead
features and how soon their count settles, and the feature pairs of adjacent sites that never
(or hardly ever) fire together.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def top_entries(values: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """Index tuples of the ``n`` largest entries of ``values``, largest first."""
    flat = np.argsort(-values, axis=None)[:n]
    return [tuple(int(i) for i in index) for index in zip(*np.unravel_index(flat, values.shape))]


def max_activation_rows(max_act: np.ndarray, sites: Sequence[str]) -> list[dict[str, Any]]:
    """Per site (``max_act`` ``[S, F]``): the median and 99th percentile of the maxima of the
    features that fired, the highest maximum and the share of features that fired."""
    alive = max_act > 0
    return [{"site": site, "median max": np.median(max_act[i][alive[i]]),
             "99th percentile": np.percentile(max_act[i][alive[i]], 99),
             "highest": max_act[i].max(), "features that fired": alive[i].mean()}
            for i, site in enumerate(sites)]


def dead_feature_rows(dead: dict[str, np.ndarray], sites: Sequence[str], rare: int = 10) -> list[dict[str, Any]]:
    """Per site, from the ``dead_features`` artefact: the features that never fired after all
    tokens (count and share), those that fired at most ``rare`` times (``None`` when ``rare``
    is not one of its thresholds), and the tokens read until the never-fired count came within 5%
    (plus one feature) of its final value."""
    n_features = dead["fired"].shape[1]
    thresholds = [int(t) for t in dead["thresholds"]]
    final = dead["dead"][-1]  # [thresholds, sites]
    rows = []
    for i, site in enumerate(sites):
        curve = dead["dead"][:, 0, i]
        first = np.argmax(curve <= curve[-1] * 1.05 + 1)
        rows.append({"site": site, "never fired": int(final[0, i]), "share": final[0, i] / n_features,
                     f"fired at most {rare} times":
                         int(final[thresholds.index(rare), i]) if rare in thresholds else None,
                     "tokens until within 5% of the final count": int(dead["tokens"][first])})
    return rows


def alive_pair_counts(dead: dict[str, np.ndarray]) -> np.ndarray:
    """``[S - 1]``: per adjacent pair of sites, the feature pairs whose two features both fired
    (alive at site L times alive at site L+1, after all tokens)."""
    n_alive = dead["fired"].shape[1] - dead["dead"][-1, 0, :]
    return np.array([n_alive[i] * n_alive[i + 1] for i in range(len(n_alive) - 1)])


def never_cofired_rows(coactivation: dict[str, np.ndarray], n_features: int, alive_pairs: np.ndarray,
                       rare: int = 10) -> list[dict[str, Any]]:
    """Per adjacent pair of sites, from the ``pair_coactivation`` artefact after all tokens: the
    share of all ``F x F`` feature pairs that never fired together, the same share of the pairs of
    alive features (``alive_pairs``, :func:`alive_pair_counts`), and the share of alive pairs
    that fired together at most ``rare`` times (the largest threshold when ``rare`` is not one)."""
    thresholds = [int(t) for t in coactivation["thresholds"]]
    t = thresholds.index(rare) if rare in thresholds else -1
    never_all, never_alive = coactivation["never_all"], coactivation["never_alive"]
    return [{"sites": str(name), "never co-fired (all pairs)": never_all[0, p, -1] / (n_features * n_features),
             "never co-fired (alive pairs)": never_alive[0, p, -1] / max(alive_pairs[p], 1),
             f"co-fired at most {thresholds[t]} times (alive pairs)":
                 never_alive[t, p, -1] / max(alive_pairs[p], 1)}
            for p, name in enumerate(coactivation["pairs"])]
