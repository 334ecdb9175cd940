"""The causal check of cross-layer edges: which statistic of a pair of adjacent sites finds
the edges whose ablation moves the downstream feature?

:func:`pair_statistics` reads one pair's statistics, :func:`candidate_edges` takes the strongest
edges by each of them plus random pairs of alive features as a control, :func:`edge_statistics`
gives every edge its value under each statistic, and :func:`edge_check_rows` compares them with
the measured effects (:func:`~helpers.interventions.edits.edge_effects`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..evolution.analysis import spearman, strongest_pairs

#: an ablation whose mean drop of ``b`` exceeds this counts as a clear drop
CLEAR_DROP = 1e-3

Edge = tuple[int, int]


@dataclass(frozen=True)
class PairStatistics:
    """One adjacent pair of sites: Pearson ``r`` and co-activation ``count`` ``[F_a, F_b]``, the
    firing counts of both sites, the best decoder match of every upstream feature, and the
    unit decoder directions of both SAEs."""

    site_a: str
    site_b: str
    r: np.ndarray
    count: np.ndarray
    fired_a: np.ndarray
    fired_b: np.ndarray
    cos_index: np.ndarray  # [F_a]: the best decoder match at site_b
    cos_value: np.ndarray  # [F_a]: its cosine
    directions_a: np.ndarray
    directions_b: np.ndarray


def pair_statistics(exp, saes: dict, pair: int) -> PairStatistics:
    """The statistics of ``exp``'s adjacent pair ``pair`` (its index), read from the artefacts
    and the SAEs."""
    from ..evolution.decoder import decoder_directions, top_cosine_matches
    from ..stats.artefacts import load_artefact

    site_a, site_b = exp.site_pairs[pair]
    fired = load_artefact(exp, "dead_features")["fired"]
    idx, val = top_cosine_matches(saes[site_a], saes[site_b], k=1)
    return PairStatistics(
        site_a, site_b, load_artefact(exp, "correlation")[f"r_{pair}"],
        load_artefact(exp, "pair_coactivation")[f"count_{pair}"].astype(np.int64),
        fired[pair], fired[pair + 1], idx[:, 0].numpy(), val[:, 0].numpy(),
        decoder_directions(saes[site_a]).numpy(), decoder_directions(saes[site_b]).numpy())


def candidate_edges(stats: PairStatistics, n: int = 40, seed: int = 0) -> dict[str, list[Edge]]:
    """The ``n`` strongest edges ``(a, b)`` by correlation, by co-activation count and by decoder
    cosine (each upstream feature with its best match), and ``n`` random pairs of alive features
    (``"random"``, seeded)."""
    alive_a, alive_b = np.flatnonzero(stats.fired_a > 0), np.flatnonzero(stats.fired_b > 0)
    candidates = {
        "correlation": [(a, b) for a, b, _ in strongest_pairs(stats.r, n)],
        "co-activation": [(a, b) for a, b, _ in strongest_pairs(stats.count.astype(float), n)],
        "decoder cosine": [(int(a), int(stats.cos_index[a])) for a in np.argsort(-stats.cos_value)[:n]],
    }
    rng = np.random.default_rng(seed)
    candidates["random"] = [(int(rng.choice(alive_a)), int(rng.choice(alive_b))) for _ in range(n)]
    return candidates


def distinct_edges(candidates: dict[str, list[Edge]]) -> list[Edge]:
    """Every edge that some statistic proposed, once, sorted."""
    return sorted({e for edges in candidates.values() for e in edges})


def edge_statistics(stats: PairStatistics, edges: Sequence[Edge]) -> dict[str, np.ndarray]:
    """Each edge's correlation, co-activation count and decoder cosine."""
    return {
        "correlation": np.array([stats.r[a, b] for a, b in edges]),
        "co-activation": np.array([stats.count[a, b] for a, b in edges], dtype=float),
        "decoder cosine": np.array([stats.directions_a[a] @ stats.directions_b[b] for a, b in edges]),
    }


def edge_check_rows(candidates: dict[str, list[Edge]], edges: Sequence[Edge], values: dict[str, np.ndarray],
                    effect: np.ndarray, n: int = 40) -> list[dict[str, Any]]:
    """Per statistic: the Spearman correlation of its values with the measured ``effect`` over all
    ``edges`` (NaN for the random control), and the median effect and share of clear drops (above
    :data:`CLEAR_DROP`) of its own candidates (its top ``n``)."""
    index = {e: i for i, e in enumerate(edges)}
    rows = []
    for name, chosen in candidates.items():
        mine = effect[[index[e] for e in chosen]]
        rows.append({"statistic": name,
                     "Spearman with the causal effect":
                         spearman(values[name], effect) if name in values else float("nan"),
                     f"median effect of its top {n} edges": np.median(mine),
                     "edges with a clear drop (> 1e-3)": np.mean(mine > CLEAR_DROP)})
    return rows
