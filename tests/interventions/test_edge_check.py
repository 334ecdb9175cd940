import numpy as np
import pytest

from helpers.evolution.analysis import spearman
from helpers.interventions.edge_check import (PairStatistics, candidate_edges, distinct_edges, edge_check_rows,
                                              edge_statistics)


@pytest.fixture
def stats():
    rng = np.random.default_rng(0)
    F = 10
    r = rng.uniform(-0.5, 1.0, (F, F))
    r[2] = np.nan  # upstream feature 2 never fired
    directions = rng.normal(size=(2, F, 6))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    cos = directions[0] @ directions[1].T
    fired_a, fired_b = rng.integers(1, 9, F), rng.integers(1, 9, F)
    fired_a[2] = 0
    return PairStatistics("s.0", "s.1", r, rng.integers(0, 50, (F, F)), fired_a, fired_b, cos.argmax(1),
                          cos.max(1), directions[0], directions[1])


def test_candidates_are_the_strongest_by_each_statistic(stats):
    c = candidate_edges(stats, n=4, seed=1)
    finite = np.where(np.isfinite(stats.r), stats.r, -np.inf)
    top_r = np.dstack(np.unravel_index(np.argsort(-finite, axis=None)[:4], finite.shape))[0]
    assert c["correlation"] == [tuple(e) for e in top_r.tolist()]
    assert [stats.count[a, b] for a, b in c["co-activation"]] == sorted(stats.count.ravel(), reverse=True)[:4]
    assert c["decoder cosine"] == [(int(a), int(stats.cos_index[a])) for a in np.argsort(-stats.cos_value)[:4]]
    assert len(c["random"]) == 4 and all(stats.fired_a[a] > 0 and stats.fired_b[b] > 0 for a, b in c["random"])
    assert candidate_edges(stats, n=4, seed=1)["random"] == c["random"]  # seeded
    edges = distinct_edges(c)
    assert edges == sorted(set(edges)) and set(edges) == {e for es in c.values() for e in es}


def test_edge_statistics_and_the_comparison(stats):
    c = candidate_edges(stats, n=4)
    edges = distinct_edges(c)
    values = edge_statistics(stats, edges)
    a, b = np.array(edges).T
    np.testing.assert_allclose(values["decoder cosine"], np.sum(stats.directions_a[a] * stats.directions_b[b], 1))
    np.testing.assert_array_equal(values["co-activation"], stats.count[a, b].astype(float))
    effect = values["co-activation"] / 100 - 0.2  # the effect follows the co-activation count exactly
    rows = {r["statistic"]: r for r in edge_check_rows(c, edges, values, effect, n=4)}
    assert rows["co-activation"]["Spearman with the causal effect"] == pytest.approx(1.0)
    assert rows["correlation"]["Spearman with the causal effect"] == pytest.approx(spearman(values["correlation"],
                                                                                            effect))
    assert np.isnan(rows["random"]["Spearman with the causal effect"])
    mine = np.array([effect[edges.index(e)] for e in c["co-activation"]])
    assert rows["co-activation"]["median effect of its top 4 edges"] == pytest.approx(np.median(mine))
    assert rows["co-activation"]["edges with a clear drop (> 1e-3)"] == np.mean(mine > 1e-3)
