"""Pass-through shares, lineages and cross-layer communities equal brute force on synthetic
statistics (random co-firing counts and correlations of four sites)."""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.evolution.communities import community_layers, cross_layer_graph, layer_communities, saturated_features
from helpers.evolution.lineages import flow_table, flows, lineages
from helpers.evolution.measures import MEASURES, PairInputs
from helpers.evolution.partners import compute_pair_partners


@pytest.fixture(scope="module")
def synthetic():
    """Four sites of 30 features from random binary firing and activations (some dead)."""
    rng = np.random.default_rng(3)
    n, F, S = 400, 30, 4
    X = []
    base = rng.random((n, F)) < 0.2
    for s in range(S):
        flip = rng.random((n, F)) < 0.05 * (s + 1)
        fires = base ^ flip
        fires[:, s * 3 : s * 3 + 3] = False  # dead features
        X.append(np.where(fires, rng.random((n, F)) + 0.1, 0.0))
    fired = np.stack([(x > 0).sum(0) for x in X])
    tables = {}
    rs = []
    for p in range(S - 1):
        a, b = X[p], X[p + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(a.T, b.T)[:F, F:]
        rs.append(r)
        count = (a > 0).astype(np.int64).T @ (b > 0).astype(np.int64)
        dirs = torch.nn.functional.normalize(torch.randn(F, 8, generator=torch.Generator().manual_seed(p)), dim=1)
        inputs = PairInputs(torch.from_numpy(count), torch.from_numpy(fired[p]), torch.from_numpy(fired[p + 1]), n,
                            torch.from_numpy(r.astype(np.float32)), dirs, dirs)
        for key, v in compute_pair_partners(inputs, k=F).items():
            tables.setdefault(key, []).append(v)
    partners = {k: np.stack(v) for k, v in tables.items()}
    partners.update(sites=[f"s{i}" for i in range(S)], pairs=[f"s{i}->s{i+1}" for i in range(S - 1)],
                    measures=list(MEASURES), n_tokens=n)
    return partners, fired, rs


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_flows_equal_brute_force(synthetic, t):
    partners, fired, rs = synthetic
    for f, r in zip(flows(partners, fired, t), rs):
        p = f.pair
        alive_a, alive_b = fired[p] > 0, fired[p + 1] > 0
        best_down = np.where(np.isnan(r), -np.inf, r).max(1)  # all-NaN rows: -inf, never continue
        best_up = np.where(np.isnan(r), -np.inf, r).max(0)
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(f.disappears, alive_a & ~(best_down >= t - 1e-7))
            np.testing.assert_array_equal(f.appears, alive_b & ~(best_up >= t - 1e-7))
        assert (f.continues | f.disappears).sum() == alive_a.sum()
    rows = flow_table(partners, fired, [0.3, 0.6])
    assert len(rows) == 2 * len(rs) and all(0 <= r["disappear"] <= 1 for r in rows)
    # a higher threshold never lets more features continue
    assert all(a["continue"] >= b["continue"] for a, b in zip(rows[:3], rows[3:]))


def test_lineages_equal_brute_force(synthetic):
    partners, fired, rs = synthetic
    t = 0.4
    lin = lineages(partners, fired, t)
    S, F = fired.shape
    # brute force: follow the argmax of r (ties: lowest index) while >= t, from every alive feature
    def step(s, f):
        if s == S - 1:
            return None
        row = np.where(np.isnan(rs[s][f]), -np.inf, rs[s][f])
        g = int(np.argmax(row))
        return g if row[g] >= t else None
    for s in range(S):
        for f in range(F):
            if fired[s, f] == 0:
                assert lin.span[s][f] == 0
                continue
            n, cur, site = 1, f, s
            while (g := step(site, cur)) is not None:
                n, cur, site = n + 1, g, site + 1
            assert lin.span[s][f] == n, (s, f)
            assert len(lin.chain(s, f)) == n
    counts = lin.lifespan_counts()
    assert counts.sum() == sum(len(x) for x in lin.starts)
    assert lin.span[lin.longest(1)[0][0]][lin.longest(1)[0][1]] == lin.lifespans().max()
    with pytest.raises(ConfigError, match="feature 99 out of range"):
        lin.chain(0, 99)


def test_cross_layer_graph_and_communities(synthetic):
    partners, fired, rs = synthetic
    t = 0.5
    g = cross_layer_graph(partners, fired, "pearson", t)
    expected = set()
    for p, r in enumerate(rs):
        a, b = np.nonzero(np.nan_to_num(r, nan=-1) >= t)
        expected |= {frozenset({f"s{p}:{i}", f"s{p+1}:{j}"}) for i, j in zip(a, b)}
    assert {frozenset(e) for e in g.edges} == expected
    comms = layer_communities(g)
    assert sum(len(c) for c in comms) == g.number_of_nodes()
    assert community_layers(g, comms[0]).sum() == len(comms[0])
    assert saturated_features(partners, "pearson", 0.99) == 0
    with pytest.raises(ConfigError, match="unknown measure"):
        cross_layer_graph(partners, fired, "spearman", 0.1)
    with pytest.raises(ConfigError, match="outside its range"):
        flows(partners, fired, 1.2)


def test_one_site_lineages_are_the_first_that_stop_at_once(synthetic):
    partners, fired, _ = synthetic
    lin = lineages(partners, fired, 0.4)
    S = fired.shape[0]
    expected = [(s, int(f)) for s in range(S - 1) for f in lin.starts[s] if len(lin.chain(s, int(f))) == 1]
    assert len(expected) > 3 and lin.one_site(3) == expected[:3] and lin.one_site(1000) == expected


def test_community_shapes_and_the_readable_ones(synthetic):
    from helpers.evolution.communities import community_shapes, readable_communities

    partners, fired, _ = synthetic
    g = cross_layer_graph(partners, fired, "pearson", 0.5)
    comms = layer_communities(g)
    sizes, spans = community_shapes(g, comms)
    assert sizes.tolist() == [len(c) for c in comms]
    assert spans.tolist() == [len({g.nodes[n]["layer"] for n in c}) for c in comms]
    # small enough first (4-40 features), most sites first, then the larger
    sizes, spans = np.array([50, 30, 10, 12, 3, 45]), np.array([4, 2, 3, 3, 4, 4])
    assert readable_communities(sizes, spans, n=4) == [3, 2, 1, 5]
    assert readable_communities(sizes, spans, n=2, largest=5) == [5, 0]  # none fits: the smallest first
